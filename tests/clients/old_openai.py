"""Drives the proxy with the old `openai<1` bindings, exactly as the original project's README did.

Run by the interpreter of a venv holding openai==0.28.1: python old_openai.py BASE_URL KEY TARGET
Prints the answers as JSON.
"""

import json
import sys

import openai

openai.api_base, openai.api_key, target = sys.argv[1:4]

chat = openai.ChatCompletion.create(
    model="llama-2-7b-chat",
    messages=[
        {"role": "system", "content": "You are Bob."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ],
    temperature=0,
    top_p=1,
    frequency_penalty=0,
    presence_penalty=0,
    stop=["END"],
    headers={"target": target},
)
completion = openai.Completion.create(
    model="llama-2-7b", prompt="The quick brown fox", max_tokens=4, temperature=0, headers={"target": target}
)
streamed = [
    chunk["choices"][0]["delta"].get("content", "")
    for chunk in openai.ChatCompletion.create(
        model="llama-2-7b-chat",
        messages=[{"role": "user", "content": "Tell me a joke"}],
        temperature=0,
        stop=["END"],
        stream=True,
        headers={"target": target},
    )
]
try:
    openai.api_key = "wrong-key-0123456789"
    openai.ChatCompletion.create(model="m", messages=[{"role": "user", "content": "hi"}], headers={"target": target})
    refused = None
except openai.error.AuthenticationError as error:
    refused = error.http_status
print(
    json.dumps(
        {
            "chat": chat.to_dict_recursive(),
            "completion": completion.to_dict_recursive(),
            "streamed": streamed,
            "refused": refused,
        }
    )
)
