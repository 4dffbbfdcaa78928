#!/usr/bin/env python3
"""Writes the Hugging Face fixtures ssm's tests check against: two byte-level BPE tokenizers with the
ids `tokenizers` gives for 10,000 strings, four small random Mamba checkpoints, a Mamba-2 one, three Llama/Mistral ones and a NemotronH one
with the logits and greedy continuations transformers computes for them. Runs where torch, transformers, tokenizers and
safetensors are installed (the GPU machine; everything runs on its CPU, in float32, one thread):

    python3 tests/hf_make_fixtures.py OUTDIR        (the tests read tests/fixtures/hf)
    python3 tests/hf_make_fixtures.py OUTDIR --only NAME     (one model fixture alone, e.g. nemotron_h)

Everything is seeded, so a rerun with the same library versions rewrites the same files. Each model is
saved, loaded back with from_pretrained and checked to give the logits recorded for it; any mismatch,
or a library behaving differently from what this script assumes, stops it with an error.
See tests/fixtures/README.md for what each file holds."""
import json
import os
import random
import shutil
import sys
import unicodedata

N_STRINGS = 10000
SPECIAL = "<|endoftext|>"
ADDED = "<|pad|>"
NEW_TOKENS = 64
MIN_MARGIN = 1e-3  # greedy steps whose top-2 logits are closer than this would make the C check flaky


def die(msg):
    print(f"hf_make_fixtures: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def save_safetensors(tensors, path, metadata):
    """safetensors.torch.save_file, but byte-for-byte reproducible: the library writes __metadata__ from a
    hash map whose order changes from run to run. Here metadata keys and tensors are in sorted order and
    the data starts 8-byte aligned; the result is read back with the library and compared."""
    import ctypes

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    dtypes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
              torch.uint8: "U8"}
    if sys.byteorder != "little":
        die("safetensors data is little-endian; run this on a little-endian machine")
    header = {"__metadata__": {k: str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in dtypes:
            die(f"{path}: tensor {name} has unsupported dtype {t.dtype}")
        nbytes = t.numel() * t.element_size()
        blobs.append(ctypes.string_at(t.data_ptr(), nbytes) if nbytes else b"")
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for b in blobs:
            f.write(b)
    back = load_file(path)
    if set(back) != set(tensors) or any(not torch.equal(back[k], tensors[k].cpu()) for k in tensors):
        die(f"{path}: safetensors reads back different tensors")
    with safe_open(path, framework="pt") as f:
        if f.metadata() != header["__metadata__"]:
            die(f"{path}: safetensors reads back different metadata")


# ---------------------------------------------------------------------------------------------------
# Text: a training corpus for the tokenizers and the strings whose encodings become fixtures.

WORDS = """the of and to in is was that for it with as on be at by this had not are but from or have an
they which one you were her all she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do first
any my now such like our over man me even most made after also did many before must through back
years where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take three
model token state space layer scan kernel matrix vector hidden gradient sample temperature logits
Mamba selective convolution recurrence embedding vocabulary tokenizer merges bytes unicode""".split()
CONTRACTIONS = ["don't", "we'll", "I'm", "it's", "can't", "you're", "they've", "she'd", "won't", "isn't",
                "DON'T", "y'all", "o'clock", "rock'n'roll", "'quoted'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
ACCENTED = ["café", "naïve", "über", "résumé", "façade", "jalapeño", "Ångström", "crème brûlée", "São Paulo",
            "Dvořák", "Łódź", "smörgåsbord", "Zürich", "déjà vu", "coöperate", "piñata", "Ærøskøbing", "ñandú",
            "Ελληνικά", "Русский", "español", "français", "Čeština", "Tiếng Việt", "ḍḥṣṭẓ", "ǅemal"]
CJK = ["中文", "日本語", "漢字", "東京", "北京", "你好世界", "こんにちは", "カタカナ", "ひらがな", "繁體字", "简体字",
       "機械学習", "言語モデル", "状態空間", "ｆｕｌｌｗｉｄｔｈ", "。", "、", "「引用」"]
HANGUL = ["한국어", "안녕하세요", "서울", "대한민국", "모델", "각", "힣"]
EMOJI = ["🙂", "👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🇯🇵", "🧑🏿‍💻", "😀😃", "🤖", "🐍", "🔥🔥", "👩‍❤️‍👨",
         "✔️", "☃", "🫠", "1️⃣"]
CODE = ["def f(x):\n    return x**2\n", "int main(void) { return 0; }", "for (i = 0; i < n; i++)",
        "a[i] += b[j];", "#include <stdio.h>", "x = {'k': [1, 2]}", "if x != y && z >= 0:", "<div class=\"a\">",
        "SELECT * FROM t WHERE id=42;", "fn main() -> i32 {}", "$HOME/.config", "a->b->c", "`code`",
        "https://example.com/path?q=1&r=2", "user@example.org", "0x1F", "\\n\\t", "/* comment */", "// done"]
PUNCT = [".", ",", "!", "?", "...", "—", "–", "\"quoted\"", "(parens)", "«guillemets»", "¿", "¡", ";", ":",
         "-", "_", "***", "!!!", "?!", "…", "•", "§", "©", "€", "£", "¥", "%", "&", "#"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n", "\t\t", "   \n\t ", "\n\n\n", "\u00a0",
          "\u3000", "\u2009", " \t \t"]
# Edge cases written out, so they are in the fixture whatever the random draws do.
FIXED = ["", " ", "  ", "\n", "\t", "\r\n", "a", "A", "é", "e\u0301", "中", "🙂", "\x00", "x\x00y", "\ufffd",
         "\ufeffBOM", "\u200b", "a\u00a0b", SPECIAL, ADDED, SPECIAL + "hello", " " + ADDED + " ",
         SPECIAL + ADDED, ADDED + ADDED, "<|pad", "<|endoftext|", "<|PAD|>", "text" + SPECIAL + "more text",
         "don't", "we'll", "I'm", "  leading", "trailing  ", "  both  ", "a" * 200, "1234567890" * 5,
         "\u212b", "\u00c5", "A\u030a", "\u1e9b\u0323", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u116e\u11a8",
         "ﬁ", "Ⅻ", "\u0915\u093f", "\u05e9\u05c1\u05b8", "مرحبا", "שלום", "नमस्ते", "ไทย", "\U0001d400", "\U00010348",
         "\U0010fffd", "\x7f", "\x1b[0m", "   \n\t  x  \n\t   "]


def nfd(s):
    return unicodedata.normalize("NFD", s)


def random_char(rng):
    """One code point from a mix of ranges (never a surrogate, which UTF-8 cannot carry)."""
    lo, hi = rng.choice([(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x52f), (0x600, 0x6ff),
                         (0x900, 0x97f), (0x1100, 0x11ff), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3),
                         (0xe000, 0xe0ff), (0xfb00, 0xfdff), (0xff00, 0xffef), (0x1f300, 0x1faff),
                         (0x10000, 0x10ffff), (0x0, 0x1f)])
    return chr(rng.randint(lo, hi))


def random_piece(rng):
    kind = rng.random()
    if kind < 0.30:
        w = rng.choice(WORDS)
        r = rng.random()
        return w.capitalize() if r < 0.15 else w.upper() if r < 0.2 else w
    if kind < 0.37:
        return rng.choice(CONTRACTIONS)
    if kind < 0.47:  # accented Latin, half of it with combining marks so NFC has work to do
        w = rng.choice(ACCENTED)
        return nfd(w) if rng.random() < 0.5 else w
    if kind < 0.53:
        return rng.choice(CJK)
    if kind < 0.58:  # Hangul, sometimes as conjoining jamo
        w = rng.choice(HANGUL)
        return nfd(w) if rng.random() < 0.4 else w
    if kind < 0.65:
        return rng.choice(EMOJI)
    if kind < 0.73:
        r = rng.random()
        if r < 0.4:
            return str(rng.randint(0, 10 ** rng.randint(1, 12)))
        if r < 0.7:
            return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}"
        return rng.choice(["1,000,000", "2024-01-01", "3.14159", "1e-5", "42%", "$9.99", "v1.2.3", "007"])
    if kind < 0.78:
        return rng.choice(CODE)
    if kind < 0.86:
        return rng.choice(PUNCT)
    if kind < 0.93:
        return rng.choice(SPACES)
    if kind < 0.96:
        return rng.choice([SPECIAL, ADDED])
    return "".join(random_char(rng) for _ in range(rng.randint(1, 3)))


def random_text(rng, max_pieces):
    pieces = [random_piece(rng) for _ in range(rng.randint(1, max_pieces))]
    out = pieces[0]
    for p in pieces[1:]:
        r = rng.random()
        out += (" " if r < 0.7 else "" if r < 0.85 else rng.choice(SPACES)) + p
    if rng.random() < 0.1:
        out = rng.choice(SPACES) + out
    if rng.random() < 0.1:
        out += rng.choice(SPACES)
    return out


def training_corpus():
    rng = random.Random(20240611)
    lines = [random_text(rng, 24) for _ in range(6000)]
    # Plain prose-like lines so common English merges exist, as in a real GPT-2 style vocabulary.
    lines += [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) + "." for _ in range(4000)]
    lines += FIXED
    return lines


def test_strings():
    rng = random.Random(7)
    out = list(FIXED)
    while len(out) < N_STRINGS:
        r = rng.random()
        if r < 0.08:
            out.append(random_char(rng))
        elif r < 0.16:
            out.append(random_piece(rng))
        else:
            out.append(random_text(rng, 4)[:48])
    for s in out:
        s.encode("utf-8")  # raises on a lone surrogate
    return out


# ---------------------------------------------------------------------------------------------------
# Tokenizers

def train_tokenizer(nfc):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=nfc)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer=trainer)
    if tok.add_tokens([ADDED]) != 1:
        die(f"add_tokens([{ADDED!r}]) did not add one token")
    if tok.token_to_id(SPECIAL) is None or tok.token_to_id(ADDED) is None:
        die("special/added token missing from the trained tokenizer")
    return tok


def write_tokenizer(tok, outdir, name, strings):
    import tokenizers
    import torch

    d = os.path.join(outdir, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    # What ssm will read must be what we used: reload the file and encode with that.
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    text, text_off, ids, ids_off = bytearray(), [0], [], [0]
    dec, dec_off = bytearray(), [0]
    bad_decode = 0
    for s in strings:
        b = s.encode("utf-8")
        enc = tok.encode(s, add_special_tokens=False).ids
        text += b
        ids += enc
        text_off.append(len(text))
        ids_off.append(len(ids))
        back = tok.decode(enc, skip_special_tokens=False)
        dec += back.encode("utf-8")
        dec_off.append(len(dec))
        if back != s:
            bad_decode += 1
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if any(i < 0 or i >= vocab for i in ids):
        die(f"{name}: an id outside the vocabulary of {vocab}")
    tensors = {
        "text_bytes": torch.tensor(list(text), dtype=torch.uint8),
        "text_offsets": torch.tensor(text_off, dtype=torch.int64),
        "ids": torch.tensor(ids, dtype=torch.int32),
        "ids_offsets": torch.tensor(ids_off, dtype=torch.int64),
    }
    if bad_decode:  # normalizers / prefix spaces: decode gives back tokenizers' text, not the input
        tensors["decoded_bytes"] = torch.tensor(list(dec), dtype=torch.uint8)
        tensors["decoded_offsets"] = torch.tensor(dec_off, dtype=torch.int64)
    meta = {"tokenizers_version": tokenizers.__version__, "count": str(len(strings)), "vocab_size": str(vocab)}
    save_safetensors(tensors, os.path.join(d, "encodings.safetensors"), meta)
    print(f"{name}: vocab {vocab}, {len(strings)} strings, {len(text)} bytes -> {len(ids)} ids"
          f" ({bad_decode} do not decode back to themselves{', expected with NFC/prefix space' if bad_decode else ''})")
    return vocab


# ---------------------------------------------------------------------------------------------------
# Models

def make_config(**kw):
    from transformers import MambaConfig

    args = dict(expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
                layer_norm_epsilon=1e-5, residual_in_fp32=True, rescale_prenorm_residual=False,
                pad_token_id=0, bos_token_id=0, eos_token_id=0, use_cache=True)
    args.update(kw)
    cfg = MambaConfig(**args)
    # Fail here, not in a confusing shape error later, if this transformers reads an argument differently.
    for k in ("vocab_size", "hidden_size", "state_size", "num_hidden_layers", "expand", "conv_kernel", "use_bias",
              "use_conv_bias", "tie_word_embeddings", "rescale_prenorm_residual"):
        if getattr(cfg, k) != args[k]:
            die(f"MambaConfig({k}={args[k]!r}) gave {k}={getattr(cfg, k)!r}")
    if cfg.intermediate_size != args["expand"] * args["hidden_size"]:
        die(f"intermediate_size {cfg.intermediate_size} != expand * hidden_size")
    return cfg


def make_llama_config(**kw):
    """A LlamaConfig (or MistralConfig, with sliding_window) for ssm's pattern "af": no biases, plain rotary
    positions, SwiGLU."""
    from transformers import LlamaConfig, MistralConfig

    args = dict(hidden_act="silu", attention_bias=False, mlp_bias=False, rms_norm_eps=1e-5, rope_theta=10000.0,
                max_position_embeddings=256, pad_token_id=0, bos_token_id=0, eos_token_id=0, use_cache=True)
    args.update(kw)
    mistral = args.get("sliding_window")
    if not mistral:
        args.pop("sliding_window", None)
    cfg = (MistralConfig if mistral else LlamaConfig)(**args)
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "tie_word_embeddings"):
        if k in args and getattr(cfg, k) != args[k]:
            die(f"{type(cfg).__name__}({k}={args[k]!r}) gave {k}={getattr(cfg, k)!r}")
    return cfg


def make_mamba2_config(**kw):
    """A Mamba2Config for ssm's 'M' layers. n_groups stays 1: transformers' gated norm is not grouped (its torch path
    normalizes over all of d_inner; mamba_ssm per group), so a fixture with n_groups > 1 would record that."""
    from transformers import Mamba2Config

    args = dict(expand=2, conv_kernel=4, n_groups=1, use_bias=False, use_conv_bias=True, rms_norm=True,
                norm_before_gate=False, residual_in_fp32=True, layer_norm_epsilon=1e-5, time_step_limit=(0.0, float("inf")),
                rescale_prenorm_residual=False, pad_token_id=0, bos_token_id=0, eos_token_id=0, use_cache=True)
    args.update(kw)
    args.setdefault("num_heads", args["expand"] * args["hidden_size"] // args["head_dim"])
    cfg = Mamba2Config(**args)
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_heads", "head_dim", "state_size", "n_groups",
              "chunk_size", "tie_word_embeddings"):
        if k in args and getattr(cfg, k) != args[k]:
            die(f"Mamba2Config({k}={args[k]!r}) gave {k}={getattr(cfg, k)!r}")
    return cfg


def make_nemotron_h_config(**kw):
    """A NemotronHConfig for ssm's M / a / f layers in NemotronH's forms (attention without rotary positions, the
    relu2 MLP). time_step_limit's lower bound is time_step_min: transformers' torch path clamps dt at time_step_min,
    its kernel path at time_step_limit, and ssm follows the limit, so the two must agree for the fixture to hold
    whichever path ran. n_groups 2: NemotronH's gated norm is grouped (Zamba2RMSNormGated), as ssm's."""
    from transformers import NemotronHConfig

    args = dict(mamba_hidden_act="silu", mlp_hidden_act="relu2", use_bias=False, use_conv_bias=True, mlp_bias=False,
                attention_bias=False, layer_norm_epsilon=1e-5, residual_in_fp32=True, rescale_prenorm_residual=False,
                time_step_min=1e-3, time_step_limit=(1e-3, float("inf")), use_mamba_kernels=False,
                max_position_embeddings=256, num_nextn_predict_layers=0, pad_token_id=0, bos_token_id=0,
                eos_token_id=0, use_cache=True)
    args.update(kw)
    args["num_hidden_layers"] = len(args["hybrid_override_pattern"])
    cfg = NemotronHConfig(**args)
    for k in ("vocab_size", "hidden_size", "num_hidden_layers", "hybrid_override_pattern", "mamba_num_heads",
              "mamba_head_dim", "ssm_state_size", "n_groups", "chunk_size", "num_attention_heads", "num_key_value_heads",
              "head_dim", "intermediate_size", "mlp_hidden_act", "tie_word_embeddings"):
        if k in args and getattr(cfg, k) != args[k]:
            die(f"NemotronHConfig({k}={args[k]!r}) gave {k}={getattr(cfg, k)!r}")
    if tuple(cfg.time_step_limit) != tuple(args["time_step_limit"]) or cfg.time_step_min != args["time_step_min"]:
        die(f"NemotronHConfig: time_step_limit {cfg.time_step_limit}, time_step_min {cfg.time_step_min}")
    return cfg


def is_tied(model):
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def model_class(cfg):
    import transformers

    return getattr(transformers, {"mamba": "MambaForCausalLM", "mamba2": "Mamba2ForCausalLM",
                                  "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                  "nemotron_h": "NemotronHForCausalLM"}[cfg.model_type])


def describe(cfg):
    if cfg.model_type == "mamba":
        return f"state {cfg.state_size}, dt rank {cfg.time_step_rank}"
    if cfg.model_type == "mamba2":
        return f"{cfg.num_heads} heads of {cfg.head_dim}, state {cfg.state_size}, chunk {cfg.chunk_size}"
    if cfg.model_type == "nemotron_h":
        return (f"pattern {cfg.hybrid_override_pattern}, mamba {cfg.mamba_num_heads} heads of {cfg.mamba_head_dim} in "
                f"{cfg.n_groups} groups, state {cfg.ssm_state_size}, chunk {cfg.chunk_size}; attention "
                f"{cfg.num_attention_heads} heads, {cfg.num_key_value_heads} kv heads; relu2 MLP {cfg.intermediate_size}")
    return (f"{cfg.num_attention_heads} heads, {cfg.num_key_value_heads} kv heads, intermediate "
            f"{cfg.intermediate_size}, window {getattr(cfg, 'sliding_window', None)}")


def new_model(cfg, seed):
    import torch

    torch.manual_seed(seed)
    model = model_class(cfg)(cfg).float().eval()
    # Off the init values (A_log = log(1..N), D = 1, zero biases, unit norms) so a loader that drops or
    # mixes up any of them changes the logits.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():  # shared (tied) parameters come once
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    if is_tied(model) != cfg.tie_word_embeddings:
        die(f"tie_word_embeddings={cfg.tie_word_embeddings} but lm_head tied={is_tied(model)}")
    return model


def load_f32(path):
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except TypeError:  # a transformers that predates `dtype`
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    model = model.eval()
    if any(p.dtype != torch.float32 for p in model.parameters()):
        die(f"{path}: from_pretrained(dtype=float32) left non-float32 parameters")
    return model


def logits_of(model, ids):
    import torch

    with torch.no_grad():
        return model(ids, use_cache=False).logits.float()


def greedy(model, vocab, g):
    """A prompt and transformers' greedy continuation of it, checked against argmax over full forward
    passes; prompts whose continuation has a near-tie anywhere are skipped."""
    import torch

    model.generation_config.eos_token_id = None  # else min_new_tokens would mask token 0
    model.generation_config.bos_token_id = None
    for attempt in range(50):
        # No id 0 in the prompt: generate() would read it as padding (pad_token_id=0) and mask it.
        prompt = torch.randint(1, vocab, (1, 8), generator=g)
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0)
        new = out[0, prompt.shape[1]:]
        if new.numel() != NEW_TOKENS:
            die(f"generate returned {new.numel()} new tokens, not {NEW_TOKENS}")
        seq = prompt[0].clone()
        margin = float("inf")
        for _ in range(NEW_TOKENS):
            last = logits_of(model, seq[None])[0, -1].double()
            top = torch.topk(last, 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq = torch.cat([seq, last.argmax()[None]])
        if not torch.equal(seq[prompt.shape[1]:], new):
            print(f"  attempt {attempt}: generate() and argmax over full passes differ (margin {margin:.2e})")
            continue
        if margin < MIN_MARGIN:
            print(f"  attempt {attempt}: near-tie on the greedy path (margin {margin:.2e}), another prompt")
            continue
        return prompt[0], new, margin
    die("no prompt with a clear greedy continuation in 50 attempts")


def write_expected(path, input_ids, logits, prompt, new, margin, extra_meta):
    import torch
    import transformers

    tensors = {
        "input_ids": input_ids.to(torch.int32).contiguous(),
        "logits": logits.to(torch.float32).contiguous(),
        "prompt_ids": prompt.to(torch.int32).contiguous(),
        "greedy_ids": new.to(torch.int32).contiguous(),
    }
    meta = {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "greedy_min_margin": f"{margin:.6g}"}
    meta.update(extra_meta)
    save_safetensors(tensors, path, meta)


def check_reload(name, d, ref_model, input_ids, logits):
    """from_pretrained gives the parameters we saved, bit for bit, and the logits we recorded."""
    import torch

    model = load_f32(d)
    ref = ref_model.state_dict()
    got = model.state_dict()
    if set(ref) != set(got):
        die(f"{name}: reloaded parameter names differ: {sorted(set(ref) ^ set(got))}")
    diff = [k for k in ref if not torch.equal(ref[k].float(), got[k].float())]
    if diff:
        die(f"{name}: parameters changed by save + from_pretrained: {diff}")
    if is_tied(model) != is_tied(ref_model):
        die(f"{name}: reloaded model tied={is_tied(model)}, saved one tied={is_tied(ref_model)}")
    err = (logits_of(model, input_ids) - logits).abs().max().item()
    if err > 1e-5:
        die(f"{name}: reloaded model's logits differ from the recorded ones by {err:.3g}")
    return model, err


def build_model(outdir, name, cfg, seed, dtype="float32", max_shard_size=None, tokenizer_json=None):
    import torch

    d = os.path.join(outdir, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    model = new_model(cfg, seed)
    if dtype == "bfloat16":
        # The reference is the bf16 checkpoint read back as float32: round the weights first.
        model = model.to(torch.bfloat16)
        model.save_pretrained(d)
        model = model.to(torch.float32).eval()
    elif max_shard_size is None:
        model.save_pretrained(d)
    else:
        for size in max_shard_size:
            shutil.rmtree(d, ignore_errors=True)
            model.save_pretrained(d, max_shard_size=size)
            shards = [f for f in os.listdir(d) if f.startswith("model-") and f.endswith(".safetensors")]
            if 2 <= len(shards) <= 3:
                break
        else:
            die(f"{name}: no max_shard_size in {max_shard_size} gave 2-3 shards")
        if not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
            die(f"{name}: sharded save wrote no model.safetensors.index.json")
    if tokenizer_json:
        shutil.copy(tokenizer_json, os.path.join(d, "tokenizer.json"))
    g = torch.Generator().manual_seed(seed + 2)
    input_ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=g)
    logits = logits_of(model, input_ids)
    if tuple(logits.shape) != (2, 16, cfg.vocab_size) or not torch.isfinite(logits).all():
        die(f"{name}: logits of shape {tuple(logits.shape)} or not finite")
    reloaded, err = check_reload(name, d, model, input_ids, logits)
    # The greedy continuation comes from the reloaded model: what ssm will run is the file, not memory.
    prompt, new, margin = greedy(reloaded, cfg.vocab_size, g)
    write_expected(os.path.join(d, "expected.safetensors"), input_ids, logits, prompt, new, margin,
                   {"model": name, "saved_dtype": dtype})
    print(f"{name}: {cfg.model_type}, vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, layers "
          f"{cfg.num_hidden_layers}, {describe(cfg)}, tied {is_tied(model)}, {dtype}; "
          f"reload max diff {err:.2e}, greedy margin {margin:.3g}")
    return d, model


def write_original_names(outdir, src_dir, cfg):
    """Model (a) in state-spaces/mamba's own layout: backbone.embedding.weight and a config.json with
    d_model / n_layer / ssm_cfg, as the original mamba_ssm checkpoints ship."""
    from safetensors.torch import load_file
    from transformers import MambaForCausalLM

    d = os.path.join(outdir, "models", "original_names")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    hf = load_file(os.path.join(src_dir, "model.safetensors"))
    if "backbone.embeddings.weight" not in hf:
        die(f"{src_dir}: no backbone.embeddings.weight in {sorted(hf)}")
    hf.pop("lm_head.weight", None)  # tied: the original format never stores it
    orig = {("backbone.embedding.weight" if k == "backbone.embeddings.weight" else k): v.contiguous()
            for k, v in hf.items()}
    save_safetensors(orig, os.path.join(d, "model.safetensors"), {"format": "pt"})
    config = {"d_model": cfg.hidden_size, "n_layer": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size,
              "ssm_cfg": {"d_state": cfg.state_size}, "rms_norm": True, "residual_in_fp32": True,
              "fused_add_norm": True, "pad_vocab_size_multiple": 1, "tie_embeddings": True}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    shutil.copy(os.path.join(src_dir, "expected.safetensors"), os.path.join(d, "expected.safetensors"))
    # Check: mapping the names back and loading into the transformers model reproduces (a)'s logits.
    back = {("backbone.embeddings.weight" if k == "backbone.embedding.weight" else k): v
            for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    model = MambaForCausalLM(cfg).float().eval()
    missing, unexpected = model.load_state_dict(back, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        die(f"original_names: missing {missing}, unexpected {unexpected}")
    if not is_tied(model):
        die("original_names: lm_head not tied after load")
    exp = load_file(os.path.join(d, "expected.safetensors"))
    err = (logits_of(model, exp["input_ids"].long()) - exp["logits"]).abs().max().item()
    if err > 1e-5:
        die(f"original_names: logits differ from tied_f32's by {err:.3g}")
    print(f"original_names: tied_f32 renamed to the state-spaces layout; logits max diff {err:.2e}")


def build_nemotron_h(outdir):
    """NemotronH (ssm's M / a / f layers in its forms): a Mamba-2 layer, attention, Mamba-2, the relu2 MLP; 4 Mamba
    heads of 16 in 2 groups, chunks of 8 over the 16 inputs; GQA attention; untied (transformers 5's NemotronH ties
    nothing)."""
    cfg = make_nemotron_h_config(vocab_size=256, hidden_size=32, hybrid_override_pattern="M*M-", mamba_num_heads=4,
                                 mamba_head_dim=16, ssm_state_size=16, n_groups=2, conv_kernel=4, chunk_size=8,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                 tie_word_embeddings=False)
    build_model(outdir, "nemotron_h", cfg, seed=8)


ONLY = {"nemotron_h": build_nemotron_h}


def main():
    only = None
    if len(sys.argv) == 4 and sys.argv[2] == "--only" and sys.argv[3] in ONLY:
        only = sys.argv[3]
    elif len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    outdir = sys.argv[1]
    try:
        import safetensors  # noqa: F401
        import tokenizers  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        die(f"{e}: this script needs torch, transformers, tokenizers and safetensors")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    torch.set_num_threads(1)  # float32 sums in one fixed order: reruns give the same bits
    torch.manual_seed(0)
    os.makedirs(outdir, exist_ok=True)
    if only:
        ONLY[only](outdir)
        print("OK")
        return

    strings = test_strings()
    vocab = write_tokenizer(train_tokenizer(nfc=False), outdir, "tokenizer", strings)
    write_tokenizer(train_tokenizer(nfc=True), outdir, "tokenizer_nfc", strings)
    if vocab < 900:
        die(f"the tokenizer learned only {vocab} tokens; the corpus is too small for 1000")

    cfg_a = make_config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, state_size=8,
                        tie_word_embeddings=True)
    dir_a, _ = build_model(outdir, "tied_f32", cfg_a, seed=1,
                           tokenizer_json=os.path.join(outdir, "tokenizer", "tokenizer.json"))
    cfg_b = make_config(vocab_size=1003, hidden_size=48, num_hidden_layers=3, state_size=16,
                        tie_word_embeddings=False)
    build_model(outdir, "untied_bf16", cfg_b, seed=2, dtype="bfloat16")
    cfg_c = make_config(vocab_size=300, hidden_size=24, num_hidden_layers=2, state_size=4, expand=2,
                        use_bias=True, use_conv_bias=False, time_step_rank=3, tie_word_embeddings=False)
    build_model(outdir, "sharded_bias", cfg_c, seed=3, max_shard_size=["40KB", "30KB", "50KB", "20KB", "60KB"])
    write_original_names(outdir, dir_a, cfg_a)
    # Transformers in Llama's and Mistral's form (ssm's pattern "af"): grouped-query and multi-query heads, tied
    # and untied heads, another rope base, a sliding window shorter than the 16 inputs.
    cfg_d = make_llama_config(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    build_model(outdir, "llama_gqa_tied", cfg_d, seed=4)
    cfg_e = make_llama_config(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=6, num_key_value_heads=1, head_dim=8, rope_theta=500000.0,
                              rms_norm_eps=1e-6, tie_word_embeddings=False)
    build_model(outdir, "llama_mqa_untied", cfg_e, seed=5)
    cfg_f = make_llama_config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=4, head_dim=8, sliding_window=6,
                              tie_word_embeddings=True)
    build_model(outdir, "mistral_window", cfg_f, seed=6)
    # Mamba-2 (ssm's 'M' layers): chunks of 8 over the 16 inputs, so transformers' chunked path crosses a chunk.
    cfg_g = make_mamba2_config(vocab_size=256, hidden_size=32, num_hidden_layers=2, head_dim=16, state_size=16,
                               chunk_size=8, tie_word_embeddings=True)
    build_model(outdir, "mamba2_tied", cfg_g, seed=7)
    build_nemotron_h(outdir)

    total = 0
    print("files:")
    for root, _, files in sorted(os.walk(outdir)):
        for f in sorted(files):
            p = os.path.join(root, f)
            size = os.path.getsize(p)
            total += size
            print(f"  {size:9d}  {os.path.relpath(p, outdir)}")
    print(f"total {total} bytes ({total / 1e6:.2f} MB)")
    if total > 4_500_000:
        die(f"fixtures take {total} bytes; keep them small (about 3-4 MB)")
    print("OK")


if __name__ == "__main__":
    main()
