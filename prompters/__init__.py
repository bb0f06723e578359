"""Prompter functions, looked up by name from config.yaml.

Every public function defined in a module of this package is a prompter named after itself,
called as `prompter(messages, endpoint)` and returning `(prompt, stop_sequences)`.
"""
