#!/usr/bin/env python3
"""Checks that a model directory written by ssm (MambaForCausalLM, Mamba2ForCausalLM, LlamaForCausalLM,
MistralForCausalLM or NemotronHForCausalLM) loads
in Hugging Face transformers as it is, and that
transformers computes what ssm computes. Runs where transformers is installed (the GPU machine has it):

    python3 tests/hf_check.py MODEL_DIR TEXT_FILE PROMPT N EXPECTED_BPB EXPECTED_CONTINUATION_FILE

Scores TEXT_FILE as one sequence (bits/byte must match `ssm eval` within 1e-4 relative) and continues
PROMPT greedily for N bytes (must equal `ssm generate --temperature 0`). Exit 0 when both match."""
import math
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, text_file, prompt, n, want_bpb, want_file = sys.argv[1:7]
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    from safetensors.torch import load_file
    saved = load_file(f"{model_dir}/model.safetensors")
    state = model.state_dict()
    for name, t in saved.items():
        if name not in state and name.startswith("backbone."):  # NemotronH: transformers 5 names them model.*
            name = "model." + name[len("backbone."):].replace("embedding.weight", "embeddings.weight")
        if name not in state:
            print(f"not in the transformers model: {name}")
        elif not torch.equal(state[name].float(), t.float()):
            print(f"loaded differently: {name}: max diff {(state[name].float() - t.float()).abs().max():.3g}")
    print("lm_head tied:", model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr())
    data = open(text_file, "rb").read()
    ids = torch.tensor([list(data)], dtype=torch.long)
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].double()
    loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
    bpb = loss / math.log(2)
    rel = abs(bpb - float(want_bpb)) / float(want_bpb)
    print(f"transformers: {bpb:.6f} bits/byte over {len(data)} bytes; ssm: {float(want_bpb):.6f}; rel diff {rel:.2e}")
    p = torch.tensor([list(prompt.encode())], dtype=torch.long)
    with torch.no_grad():
        out = model.generate(p, max_new_tokens=int(n), do_sample=False, eos_token_id=None, pad_token_id=0)
    got = bytes(out[0, p.shape[1]:].tolist())
    want = open(want_file, "rb").read()
    print(f"greedy continuation: {'identical' if got == want else 'DIFFERENT'} ({len(got)} bytes): {got[:60]!r}")
    ok = rel < 1e-4 and got == want
    print("OK" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
