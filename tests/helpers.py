"""Shared test helpers: timm reference models with perturbed weights (so every parameter matters)."""
import torch

import maskedkd as mkd


def timm_model(name, seed=0, **kw):
    """A timm model at random init in eval mode, every parameter nudged so biases, layer scales and
    tokens are non-trivial (timm zero-inits biases and sets layer scale to 1e-6)."""
    import timm
    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False, **kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(".gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def timm_cfg(name, **kw):
    """Our config for the same timm preset and overrides."""
    return mkd.vit_config(name, **kw)


def assert_entry_points_equal(ref, params, x, cfg, atol=1e-5):
    """The reference module's logits on x equal ours through forward, teacher_forward (every patch) and
    student_forward; returns the student scores."""
    with torch.no_grad():
        want = ref(x)
        outs = [mkd.forward(params, x, cfg), mkd.teacher_forward(params, x, cfg)]
        logits, scores = mkd.student_forward(params, x, cfg)
    assert want.abs().max() > 1e-2  # the logits are not trivially small
    for out in (*outs, logits):
        torch.testing.assert_close(out, want, atol=atol, rtol=atol)
    return scores
