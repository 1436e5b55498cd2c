"""The data methods read: the audit corpus, activation collection and storage, cross-tokenizer alignment, greedy generation."""
