"""Learning from conversations: stored turns (with their customers' ratings) become a redacted
training set (`export`), which fine-tunes the response generator (`finetune`); the result is
hot-swapped into a running server with `PUT /api/generator`."""
