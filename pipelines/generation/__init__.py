"""Response generation backends (multilingual encoder-decoder models)."""
