"""Drives the proxy's `/` route with TGI's own client libraries: python tgi_clients.py LIBRARY BASE_URL KEY.

LIBRARY is `text_generation` (run in its own venv: it needs huggingface-hub<1) or
`huggingface_hub` (InferenceClient). Prints what each call returned, as JSON.
"""

import json
import sys

library, base_url, key = sys.argv[1:4]
PROMPT = "What is Deep Learning?"

if library == "text_generation":
    from text_generation import Client

    client = Client(base_url, headers={"Authorization": f"Bearer {key}"})
    answer = client.generate(PROMPT, max_new_tokens=5, seed=7)
    streamed = [event.token.text for event in client.generate_stream(PROMPT, max_new_tokens=5)]
    details = answer.details
    result = {
        "text": answer.generated_text,
        "streamed": streamed,
        "finish_reason": details.finish_reason.value,
        "generated_tokens": details.generated_tokens,
        "seed": details.seed,
    }
else:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=base_url, api_key=key)
    answer = client.text_generation(PROMPT, max_new_tokens=5, details=True, seed=7)
    result = {
        "text": answer.generated_text,
        "streamed": list(client.text_generation(PROMPT, max_new_tokens=5, stream=True)),
        "finish_reason": answer.details.finish_reason,
        "generated_tokens": answer.details.generated_tokens,
        "seed": answer.details.seed,
    }
print(json.dumps(result))
