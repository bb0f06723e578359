"""The APIs requests and answers are written in: the kinds mappers take and give (a chain's links
must fit), the front whose errors a route speaks, the API whose answers the proxy keeps."""

OPENAI_CHAT = "openai.chat"
PIVOT = OPENAI_CHAT  # what every front and every target kind maps to and from
OPENAI_COMPLETIONS = "openai.completions"
OPENAI_RESPONSES = "openai.responses"
OPENAI_COMPATIBLE = "openai.compatible"  # a chat server's own dialect (TGI's /v1, vLLM, ...)
COMPATIBLE_TOKENIZE = "openai.compatible.tokenize"  # its chat tokenizer: vLLM's /tokenize, TGI's /chat_tokenize
ANTHROPIC_MESSAGES = "anthropic.messages"
ANTHROPIC_COUNT = "anthropic.count"
TGI_GENERATE = "tgi.generate"
TGI_TOKENIZE = "tgi.tokenize"
OPENAI_EMBEDDINGS = "openai.embeddings"
RERANK = "rerank"  # Cohere's and Jina's: query, documents, top_n
TEI_EMBED = "tei.embed"
TEI_RERANK = "tei.rerank"
