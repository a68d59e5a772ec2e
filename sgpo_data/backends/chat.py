"""Chat-template helpers shared by the engines that tokenize for themselves (transformers, vLLM offline)."""

from __future__ import annotations

from sgpo_data.backends.base import Conversation


def continues(conversation: Conversation) -> bool:
    """Whether the conversation ends in a partial assistant turn for the model to continue (a step prefix)."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


def prompt_text(tokenizer, conversation: Conversation) -> str:
    """The conversation rendered by the model's chat template, ready for the assistant's turn (or, when it ends
    with an assistant message, ready to continue that message)."""
    if continues(conversation):
        return tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, conversation: Conversation) -> list[int]:
    return tokenizer(prompt_text(tokenizer, conversation), add_special_tokens=False).input_ids


def answer_ids(tokenizer, conversation: Conversation, prompt: str, answer: str) -> list[int]:
    """Tokens of a whole assistant turn `answer` as the chat template closes it (end-of-turn included)."""
    full = tokenizer.apply_chat_template(conversation + [{"role": "assistant", "content": answer}], tokenize=False)
    tail = full[len(prompt):] if full.startswith(prompt) else answer + tokenizer.eos_token
    return tokenizer(tail, add_special_tokens=False).input_ids
