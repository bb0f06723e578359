"""Drives the proxy with langchain-openai's ChatOpenAI: python langchain_chat.py BASE_URL KEY TARGET."""

import json
import sys

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

base_url, key, target = sys.argv[1:4]
model = ChatOpenAI(
    model="llama-2-7b-chat",
    base_url=base_url,
    api_key=key,
    default_headers={"target": target},
    temperature=0,
    top_p=1,
    frequency_penalty=0,
    presence_penalty=0,
    max_tokens=40,
    stop=["END"],
    max_retries=0,
)
answer = model.invoke(
    [
        SystemMessage("You are Bob."),
        HumanMessage("Hello"),
        AIMessage("Hi! How can I help?"),
        HumanMessage("Tell me a joke"),
    ]
)
print(
    json.dumps(
        {
            "content": answer.content,
            "usage": answer.usage_metadata,
            "finish_reason": answer.response_metadata.get("finish_reason"),
        }
    )
)
