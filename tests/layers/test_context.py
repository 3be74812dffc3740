"""GC block: parity with mmcv / timm / the seed's block, the maths, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F

from gcnet import GlobalContextBlock, SimplifiedNonLocalBlock
from gcnet.convert import context_block_from_mmcv, global_context_from_timm
from tests.conftest import randomize_
from tests.helpers import SeedGlobalContextBlock, seed_gc_to_ours

FUSIONS = [("add",), ("mul",), ("add", "mul")]


@pytest.mark.parametrize("pooling", ["att", "avg"])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("ratio", [1 / 4, 1 / 16])
def test_parity_with_mmcv_context_block(pooling, fusion, ratio):
    from mmcv.cnn.bricks import ContextBlock

    mm = ContextBlock(64, ratio, pooling_type=pooling, fusion_types=tuple(f"channel_{f}" for f in fusion))
    randomize_(mm).double().eval()
    ours = GlobalContextBlock(64, ratio, pooling=pooling, fusion=fusion).double()
    ours.load_state_dict(context_block_from_mmcv(mm.state_dict()), strict=True)
    x = torch.randn(3, 64, 9, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(x), mm(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fuse_add,fuse_scale", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("use_attn", [True, False])
def test_parity_with_timm_global_context(fuse_add, fuse_scale, use_attn):
    from timm.layers import GlobalContext

    tm = GlobalContext(48, use_attn=use_attn, fuse_add=fuse_add, fuse_scale=fuse_scale, rd_ratio=1 / 8)
    randomize_(tm).double().eval()
    fusion = tuple(f for f, on in (("add", fuse_add), ("mul", fuse_scale)) if on)
    ours = GlobalContextBlock(
        48, 1 / 8, pooling="att" if use_attn else "avg", fusion=fusion, ln_eps=1e-6
    ).double()
    ours.load_state_dict(global_context_from_timm(tm.state_dict()), strict=True)
    x = torch.randn(2, 48, 6, 10, dtype=torch.float64)
    torch.testing.assert_close(ours(x), tm(x), rtol=1e-12, atol=1e-12)


def test_seed_block_equals_ours():
    seed = randomize_(SeedGlobalContextBlock(128, scale=16)).double()
    ours = GlobalContextBlock(128, ratio=1 / 16).double()
    ours.load_state_dict(seed_gc_to_ours(seed.state_dict()), strict=True)
    x = torch.randn(2, 128, 24, 24, dtype=torch.float64)
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-12, atol=1e-12)


def test_direct_formula():
    """z = x + conv2(relu(LN(conv1(sum_j softmax_j(w.x_j + b) x_j)))) written out."""
    blk = randomize_(GlobalContextBlock(8, ratio=1 / 4)).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    w, b = blk.pool.conv_mask.weight.flatten(), blk.pool.conv_mask.bias
    t = blk.transform_add
    for n in range(2):
        xs = x[n].reshape(8, -1)
        alpha = torch.softmax(w @ xs + b, dim=0)
        ctx = (xs * alpha).sum(1)
        h = t.conv_in.weight.flatten(1) @ ctx + t.conv_in.bias
        h = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-5)
        h = F.relu(h * t.norm.weight.flatten() + t.norm.bias.flatten())
        d = t.conv_out.weight.flatten(1) @ h + t.conv_out.bias
        torch.testing.assert_close(blk(x)[n], x[n] + d[:, None, None])


def test_init_matches_official():
    blk = GlobalContextBlock(256, fusion=("add", "mul"))
    for t in (blk.transform_add, blk.transform_mul):
        assert torch.count_nonzero(t.conv_out.weight) == 0
        assert torch.count_nonzero(t.conv_out.bias) == 0
    assert torch.count_nonzero(blk.pool.conv_mask.bias) == 0
    # kaiming normal, fan_in, relu gain: std = sqrt(2 / C)
    std = blk.pool.conv_mask.weight.std().item()
    assert abs(std - (2 / 256) ** 0.5) < 0.25 * (2 / 256) ** 0.5
    assert blk.transform_add.conv_in.out_channels == 16
    assert GlobalContextBlock(256, ratio=1 / 4).transform_add.conv_in.out_channels == 64


@pytest.mark.parametrize("cls", [GlobalContextBlock, SimplifiedNonLocalBlock])
def test_identity_at_init(cls):
    blk = cls(32)
    x = torch.randn(2, 32, 5, 5)
    assert torch.equal(blk(x), x)


def test_mul_fusion_at_init_halves():
    blk = GlobalContextBlock(32, fusion="mul")  # sigmoid(0) = 0.5
    x = torch.randn(2, 32, 5, 5)
    torch.testing.assert_close(blk(x), 0.5 * x)


@pytest.mark.parametrize("pooling", ["att", "avg"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradcheck(pooling, fusion):
    blk = randomize_(GlobalContextBlock(16, 1 / 4, pooling=pooling, fusion=fusion), 0.5).double()
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,))
    # the parameters too (conv_mask's gradient goes through the hand-written backward)
    params = tuple(blk.parameters())

    def f(*ps):
        return torch.func.functional_call(blk, dict(zip([n for n, _ in blk.named_parameters()], ps)), (x,))

    assert torch.autograd.gradcheck(f, params)


def test_gradcheck_channels_last_and_3d():
    blk = randomize_(GlobalContextBlock(16, 1 / 4), 0.5).double()
    x = torch.randn(2, 16, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(blk, (x.requires_grad_(),))
    x3 = torch.randn(1, 16, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x3,))
    x1 = torch.randn(2, 16, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x1,))


def _plain_block(blk, x):
    """The add-fused block written with plain autograd ops from its parameters (no gcnet code)."""
    xf = x.flatten(2)
    conv_mask = blk.pool.conv_mask
    if conv_mask is None:
        ctx = xf.mean(-1)
    else:
        a = torch.softmax(torch.einsum("c,ncl->nl", conv_mask.weight.flatten(), xf) + conv_mask.bias, -1)
        ctx = torch.einsum("ncl,nl->nc", xf, a)
    t = blk.transform_add
    h = ctx
    if t.conv_in is not None:
        h = h @ t.conv_in.weight.flatten(1).t() + t.conv_in.bias
        if t.norm is not None:
            p = h.shape[1]
            h = F.layer_norm(h, (p,), t.norm.weight.reshape(p), t.norm.bias.reshape(p), t.norm.eps)
        h = F.relu(h)
    d = h @ t.conv_out.weight.flatten(1).t() + t.conv_out.bias
    return x + d.reshape(d.shape + (1,) * (x.dim() - 2))


ADD_VARIANTS = {
    "gc": lambda: GlobalContextBlock(64, 1 / 16),
    "gc-no-ln": lambda: GlobalContextBlock(64, 1 / 8, norm=False),
    "avg-add": lambda: GlobalContextBlock(64, 1 / 16, pooling="avg"),
    "snl": lambda: SimplifiedNonLocalBlock(64),
}


@pytest.mark.parametrize("variant", list(ADD_VARIANTS))
def test_custom_backward_matches_autograd(variant):
    """The one-node block (hand-written backward) equals autograd through the plain ops: output
    and every gradient, float32 at a real size, contiguous / channels_last / 3D / expanded dy."""
    blk = randomize_(ADD_VARIANTS[variant](), 0.1)
    for x, g in (
        (torch.randn(4, 64, 14, 14), torch.randn(4, 64, 14, 14)),
        (torch.randn(4, 64, 14, 14).to(memory_format=torch.channels_last), torch.randn(4, 64, 14, 14)),
        (torch.randn(2, 64, 3, 5, 6), torch.randn(2, 64, 3, 5, 6)),
        (torch.randn(2, 64, 9, 9), torch.ones(1).expand(2, 64, 9, 9)),  # dy of y.sum()
    ):
        xa = x.clone().requires_grad_()
        xb = x.clone().requires_grad_()
        ya, yb = blk(xa), _plain_block(blk, xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
        ga = torch.autograd.grad(ya, [xa, *blk.parameters()], g)
        gb = torch.autograd.grad(yb, [xb, *blk.parameters()], g, allow_unused=True)
        for (name, _), a, b in zip([("x", None), *blk.named_parameters()], ga, gb):
            if name == "pool.conv_mask.bias":  # analytically zero (shift-invariant softmax)
                assert torch.count_nonzero(a) == 0 and (b is None or b.abs().max() < 1e-3 * g.abs().sum())
                continue
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        assert ga[0].shape == x.shape


@pytest.mark.parametrize("variant", list(ADD_VARIANTS))
def test_gradcheck_add_variants(variant):
    blk = randomize_(ADD_VARIANTS[variant](), 0.3).double()
    x = torch.randn(2, 64, 3, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in blk.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(blk, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *blk.parameters()))


def test_no_grad_and_grad_paths_agree_and_frozen_parts():
    """Inference (no graph), the one-node graph, and graphs where only x or only the
    parameters need a gradient, all give one output; None where no gradient is asked."""
    blk = randomize_(GlobalContextBlock(32, 1 / 4), 0.2)
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        ref = blk(x)
    torch.testing.assert_close(blk(x), ref)
    xg = x.clone().requires_grad_()
    for p in blk.parameters():
        p.requires_grad_(False)
    y = blk(xg)
    torch.testing.assert_close(y, ref)
    y.sum().backward()
    assert xg.grad is not None and all(p.grad is None for p in blk.parameters())
    blk.transform_add.conv_out.weight.requires_grad_(True)
    blk(x).sum().backward()
    assert blk.transform_add.conv_out.weight.grad is not None
    assert blk.pool.conv_mask.weight.grad is None


def test_ranks_agree():
    """GC pools over all positions: 1D / 3D inputs give the 2D result on reshaped input."""
    blk = randomize_(GlobalContextBlock(16, 1 / 4, fusion=("add", "mul")))
    x3 = torch.randn(2, 16, 3, 4, 5)
    y3 = blk(x3)
    torch.testing.assert_close(y3, blk(x3.reshape(2, 16, 12, 5)).reshape(x3.shape))
    torch.testing.assert_close(y3, blk(x3.reshape(2, 16, 60)).reshape(x3.shape))
    att = blk.attention(x3)
    assert att.shape == (2, 3, 4, 5)
    torch.testing.assert_close(att.sum(dim=(1, 2, 3)), torch.ones(2))


def test_snl_is_query_independent():
    """SNL / GC add the same vector at every position: out - x is constant over space."""
    for blk in (randomize_(SimplifiedNonLocalBlock(8)), randomize_(GlobalContextBlock(8, 1 / 4))):
        x = torch.randn(2, 8, 6, 6)
        delta = blk(x) - x
        torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))
        assert delta.abs().max() > 1e-3  # not trivially zero
    snl = SimplifiedNonLocalBlock(8)
    assert snl.transform_add.conv_in is None and snl.transform_add.conv_out.weight.shape == (
        8,
        8,
        1,
        1,
    )


def test_channels_last_matches_contiguous():
    blk = randomize_(GlobalContextBlock(32, 1 / 4, fusion=("add", "mul")), 0.1)
    x = torch.randn(2, 32, 9, 9)
    y = blk(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, blk(x))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_autocast_bf16_cpu(fusion):
    blk = randomize_(GlobalContextBlock(64, 1 / 4, fusion=fusion), 0.1)
    x = torch.randn(2, 64, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = blk(x)
        att = blk.pool.attention(x.bfloat16())
    assert att.dtype == torch.float32  # softmax in float32
    torch.testing.assert_close(att.sum(-1), torch.ones(2))
    assert y.dtype == torch.float32  # x's dtype is kept
    torch.testing.assert_close(y, blk(x), rtol=3e-2, atol=3e-2)
    y.float().sum().backward()  # backward under autocast works


def test_half_input_softmax_in_float32():
    blk = randomize_(GlobalContextBlock(16, 1 / 4), 0.1).bfloat16()
    x = torch.randn(2, 16, 5, 5).bfloat16()
    assert blk.pool.attention(x).dtype == torch.float32
    assert blk(x).dtype == torch.bfloat16


@pytest.mark.parametrize("fusion", [("add",), ("add", "mul")])  # the one-node block; the modules
def test_torch_compile(fusion):
    blk = randomize_(GlobalContextBlock(16, 1 / 4, fusion=fusion), 0.1)
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    ref = blk(x)
    compiled = torch.compile(blk, backend="aot_eager")
    y = compiled(x)
    torch.testing.assert_close(y, ref)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (rx,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(gx, rx)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=8, ratio=1 / 16), r"leaves int\(8 \* 0.0625\) = 0"),
        (dict(channels=32, pooling="max"), r"pooling must be one of \('att', 'avg'\), got 'max'"),
        (dict(channels=32, fusion="cat"), r"fusion must be one of \('add', 'mul'\), got 'cat'"),
        (dict(channels=32, fusion=()), "at least one"),
        (dict(channels=0), "positive int, got 0"),
        (dict(channels=32, ratio=-1), "positive number"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GlobalContextBlock(**kwargs)


def test_bad_input():
    blk = GlobalContextBlock(16, 1 / 4)
    with pytest.raises(ValueError, match="built for 16 channels, got input with 8"):
        blk(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match=r"got 2D input of shape \(2, 16\)"):
        blk(torch.randn(2, 16))
    with pytest.raises(ValueError, match="6D"):
        blk(torch.randn(1, 16, 2, 2, 2, 2))


def _private_torch_uses(path) -> set[str]:
    """Dotted torch names that ``path`` imports, reads or getattr()s and that are private torch
    APIs: ``torch._*`` (dunders aside: ``torch._C``, ``torch._softmax_backward_data``, ...) or
    ``torch.ops.aten.*`` (ATen's internal op namespace)."""
    import ast

    tree = ast.parse(path.read_text(), str(path))
    aliases: dict[str, str] = {}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "torch":
                    used.add(a.name)
                    aliases[a.asname or "torch"] = a.name if a.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "torch":
            for a in node.names:
                used.add(f"{node.module}.{a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in aliases:
            return ".".join([aliases[node.id], *reversed(parts)])
        return None

    for node in ast.walk(tree):
        name = dotted(node) if isinstance(node, ast.Attribute) else None
        if name:
            used.add(name)
        if (  # getattr(torch._C, "...") / getattr(torch, "_name", ...)
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            arg = node.args[0]
            base = dotted(arg) or (aliases.get(arg.id) if isinstance(arg, ast.Name) else None)
            if base:
                used.add(f"{base}.{node.args[1].value}")

    def private(name: str) -> bool:
        parts = name.split(".")
        top = parts[1] if len(parts) > 1 else ""
        return name.startswith("torch.ops.aten") or (top.startswith("_") and not top.endswith("__"))

    return {n for n in used if private(n)}


def test_no_private_torch_api_in_the_package():
    """Public torch APIs only (issue 24): no ``torch._*`` (``torch._C``,
    ``torch._softmax_backward_data``, ...) and no ``torch.ops.aten`` anywhere in ``src/gcnet``,
    imported, read or through getattr (the checker is checked below on the old calls)."""
    from pathlib import Path

    import gcnet

    root = Path(gcnet.__file__).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        bad = _private_torch_uses(path)
        if bad:
            found[rel] = sorted(bad)
    assert not found, f"private torch APIs used: {found}"


def test_private_torch_checker_catches_the_old_calls(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import ops\n"
        "a = torch._softmax_backward_data\nb = torch.ops.aten.native_layer_norm_backward\n"
        "c = getattr(torch._C, '_is_any_autocast_enabled', None)\nd = F._canonical_mask\n"
        "e = torch.softmax\nf = torch.__version__\ng = getattr(torch, '_foo')\nh = ops.aten.add\n"
    )
    got = _private_torch_uses(src)
    assert {"torch._softmax_backward_data", "torch.ops.aten.native_layer_norm_backward", "torch._C",
            "torch._C._is_any_autocast_enabled", "torch._foo", "torch.ops.aten.add"} <= got  # fmt: skip
    assert not {"torch.softmax", "torch.__version__"} & got


_SE = {"pooling": "avg", "fusion": "mul", "norm": False}


@pytest.mark.parametrize(
    "kw",
    [{}, {"pooling": "avg"}, {"ratio": None}, {"ratio": 1 / 4, "norm": False}, _SE, {**_SE, "relu": False}],
)
def test_direct_and_module_paths_agree(kw):
    """Without hooks the add branch (and SE's mul branch) runs as a few direct ops; with a hook on
    any submodule it runs through the modules (so the hook fires). Both give the same output and
    gradients."""
    torch.manual_seed(0)
    block = GlobalContextBlock(16, **kw).double()
    for p in block.parameters():
        torch.nn.init.normal_(p, 0, 0.3)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)

    def run():
        y = block(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *block.parameters()], allow_unused=True)
        with torch.no_grad():
            y_eval = block(x)
        return [y, y_eval, *[g for g in grads if g is not None]]

    branch = "transform_mul" if block.transform_add is None else "transform_add"
    direct = run()
    assert not block._hooked(branch)
    assert (block._direct_scale(x) is not None) == (branch == "transform_mul")
    seen = []
    handle = getattr(block, branch).conv_out.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    try:
        assert block._hooked(branch)
        assert block._direct_scale(x) is None
        through_modules = run()
    finally:
        handle.remove()
    assert len(seen) == 2  # the hook fired on both forwards
    for a, b in zip(direct, through_modules, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
