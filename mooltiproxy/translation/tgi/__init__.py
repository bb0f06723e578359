"""OpenAI <-> Hugging Face TGI translation, used by the mappers in mappers/openai_tgi.py."""
