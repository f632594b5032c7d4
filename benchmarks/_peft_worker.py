"""The PyTorch side of benchmarks/llama1b.py's PEFT comparison (run with the interop environment's Python).

Loads the transformers checkpoint in ``argv[1]`` (float32), adds ``argv[2]`` LoRA adapters
``u0, u1, ...`` of rank ``argv[3]`` (PEFT's ``init_lora_weights=False``: non-zero) on the seven
projections, reads the token ids from ``argv[4]`` (``.npy``, ``(batch, time)``), prints one JSON
line ``{"ready": ...}``, then answers each line ``N`` on stdin with one timed mixed-adapter forward
(``adapter_names``: example ``n`` uses ``u{n mod N}``; last-position logits only) as a JSON line
``{"cpu": s, "wall": s}``. One thread (the parent pins the core).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    directory, adapters, rank, tokens_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    load = time.perf_counter() - t
    t = time.perf_counter()
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False)
    model = get_peft_model(base, config, adapter_name="u0")
    for i in range(1, adapters):
        model.add_adapter(f"u{i}", config)
    model.eval()
    build = time.perf_counter() - t
    tokens = torch.from_numpy(np.load(tokens_path)).long()
    print(json.dumps({"ready": True, "load_seconds": load, "adapters_seconds": build}), flush=True)
    for line in sys.stdin:
        distinct = int(line)
        names = [f"u{n % distinct}" for n in range(tokens.shape[0])]
        with torch.inference_mode():
            wall, cpu = time.perf_counter(), time.process_time()
            logits = model(input_ids=tokens, adapter_names=names, logits_to_keep=1).logits
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(json.dumps({"cpu": cpu, "wall": wall, "shape": list(logits.shape)}), flush=True)


if __name__ == "__main__":
    main()
