"""Text pipeline: ULMFiT tokenizer, language-model streams, classification batches, vocabulary transfer.

Names are imported on first use (`tl_nlp.lazy_exports`): the tokenizer loads without datasets.
"""

from ..lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "backward": ["backward_tokenizer", "ensemble_predict"],
        "classification_data": [
            "SortedSampler",
            "SortishSampler",
            "TextDataError",
            "check_texts",
            "check_utf8_file",
            "encode_labels",
            "load_text_dataset",
            "padding_fraction",
            "sortish_batches",
            "tokenize_dataset",
            "tokenize_for_language_model",
        ],
        "lm_data": ["LanguageModelDataLoader", "LanguageModelStreams", "language_model_data", "pack_into_blocks"],
        "rules": ["SPECIAL_TOKENS", "apply_rules", "undo_rules"],
        "tokenization_ulmfit": ["ULMFiTTokenizerFast", "train_ulmfit_tokenizer"],
        "vocab_transfer": ["transfer_vocabulary"],
    },
)
