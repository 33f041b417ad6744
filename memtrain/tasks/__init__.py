"""Task builders: self-supervised E2E/IMR tasks and downstream long-document QA tasks."""
