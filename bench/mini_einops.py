"""einops's rearrange and repeat for the patterns mamba_ssm's Mamba-2 path uses, for bench/torch_mamba2_bench.py on a
machine without the einops package (the GPU machine's torch has none): names, groups "(h p)", "1" and one "...".
Only what the benchmark needs; with the real einops installed it is not used."""
import math
import re

import torch


def _parse(side):
    """a side of a pattern as a list of items: a name, "1", "..." or a list of names (a group)"""
    items, group = [], None
    for tok in re.findall(r"\(|\)|\.\.\.|[A-Za-z_][A-Za-z0-9_]*|\d+", side):
        if tok == "(":
            group = []
        elif tok == ")":
            items.append(group)
            group = None
        elif group is not None:
            group.append(tok)
        else:
            items.append(tok)
    return items


def _solve(x, left, sizes):
    """x's shape split into its elementary axes: [(name, size)] in order ("..." expands to named axes "...k")"""
    n_ell = x.dim() - (len(left) - (1 if "..." in left else 0))
    axes, d = [], 0
    for item in left:
        if item == "...":
            axes += [(f"...{k}", x.shape[d + k]) for k in range(n_ell)]
            d += n_ell
            continue
        names = item if isinstance(item, list) else [item]
        known = math.prod(sizes[nm] for nm in names if nm in sizes and nm != "1")
        unknown = [nm for nm in names if nm not in sizes and nm != "1"]
        assert len(unknown) <= 1, f"mini_einops: cannot split {names}"
        for nm in names:
            if nm == "1":
                continue
            size = sizes.get(nm, x.shape[d] // known if nm in unknown else None)
            sizes.setdefault(nm, size)
            axes.append((nm, size))
        d += 1
    return axes


def _expand_right(right, axes):
    n_ell = sum(1 for nm, _ in axes if nm.startswith("..."))
    out = []
    for item in right:
        if item == "...":
            out += [[f"...{k}"] for k in range(n_ell)]
        elif isinstance(item, list):
            out.append([nm for nm in item if nm != "1"])
        else:
            out.append([] if item == "1" else [item])
    return out


def _apply(x, pattern, sizes, new_ok):
    left_s, right_s = pattern.split("->")
    left, right = _parse(left_s), _parse(right_s)
    axes = _solve(x, left, dict(sizes))
    x = x.reshape([s for _, s in axes])
    have = [nm for nm, _ in axes]
    groups = _expand_right(right, axes)
    order = [nm for g in groups for nm in g if nm in have]
    x = x.permute([have.index(nm) for nm in order])
    if new_ok:  # repeat: new axes inserted and expanded
        shape = []
        for g in groups:
            for nm in g:
                if nm in have:
                    shape.append(x.shape[len(shape)])
                else:
                    x = x.unsqueeze(len(shape))
                    shape.append(sizes[nm])
        x = x.expand(shape)
    size_of = dict(axes) | {nm: v for nm, v in sizes.items()}
    return x.reshape([math.prod(size_of[nm] for nm in g) for g in groups])


def rearrange(x, pattern, **sizes):
    return _apply(x, pattern, sizes, False)


def repeat(x, pattern, **sizes):
    return _apply(x, pattern, sizes, True).contiguous()
