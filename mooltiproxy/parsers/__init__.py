"""Readers of the text a model generates: its tool calls, one parser class per format."""
