"""Tiny random models built offline: a small BPE tokenizer and a 2-layer Llama.

They are saved with `save_pretrained` and loaded back through the app's own loader, so tests
exercise the real loading, formatting, generation and streaming code in milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Shaking out tests that depend on what a random model says: `TINY_MODEL_SEED=1 scripts/test` runs the
# whole suite on other random weights. Another CPU (AMX against AVX-512, say) changes a random model's
# words the same way, by rounding; a test that passes on one seed and fails on another asserts chance.
SEED_VARIABLE = "TINY_MODEL_SEED"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "Hello, how are you today? I am fine, thank you very much.",
    "User: What is the capital of France?\nAssistant: The capital of France is Paris.",
    "Translate the text between the fences into German. Übersetze den Text: Guten Tag!",
    "Summarize in two sentences. The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # code {braces} [brackets] <tags> 😀 ünïcödé",
    "Hokus Düsseldorf, Esoterikus Köln, Hömöopathikus Essen, Alohomora!",
]


def build_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"] if chat_template else [],
    )
    if chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_model(tokenizer, seed: int | None = None, layers: int = 2, hidden: int = 64, context: int = 512, vocab: int | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(int(os.environ.get(SEED_VARIABLE, "0")) if seed is None else seed)
    config = LlamaConfig(
        vocab_size=vocab or len(tokenizer),  # more than the tokenizer's: a bigger model (its extra rows never come up)
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, chat_template: bool = True, endless: bool = False, **model_options) -> Path:
    """Writes a loadable model folder (weights, config, tokenizer) and returns it.

    `endless`: its generation config forbids the end-of-sequence token, so a process that loads it
    (the terminal chat, the app) answers until its token limit or a Stop."""
    tokenizer = build_tokenizer(chat_template)
    model = build_model(tokenizer, **model_options)
    if endless:
        model.generation_config.suppress_tokens = [tokenizer.eos_token_id]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
