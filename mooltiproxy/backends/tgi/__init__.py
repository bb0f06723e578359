"""OpenAI <-> Hugging Face TGI translation, used by the mappers in mooltiproxy/backends/tgi/mappers.py."""
