"""Length-grouped chunks of the cached loss: the same loss and gradient as the stock chunks, fewer padded tokens."""

from __future__ import annotations

import pytest
import torch

TEXTS = [
    "Aspirin.",
    "Long-term low-dose aspirin reduces the risk of a second ischaemic stroke in adults over sixty five years.",
    "Statins lower LDL.",
    "Metformin lowers HbA1c in adults with type 2 diabetes and does not cause weight gain in most of them.",
    "Smoking raises risk.",
    "Vitamin D supplements did not prevent fractures in community-dwelling older adults in this trial.",
]
PASSAGES = [t + " Randomised trial." for t in reversed(TEXTS)]


def loss_and_grads(model, grouped: bool):
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MatryoshkaLoss

    from medical_matryoshka.training.loss import LengthGroupedCachedMNRL

    cls = LengthGroupedCachedMNRL if grouped else CachedMultipleNegativesRankingLoss
    loss_fn = MatryoshkaLoss(model, cls(model, mini_batch_size=2), matryoshka_dims=[64, 16])
    widths = []
    forward = model.forward

    def counting(features, *args, **kwargs):
        widths.append(tuple(features["input_ids"].shape))
        return forward(features, *args, **kwargs)

    model.forward = counting
    try:
        model.zero_grad()
        features = [model.preprocess(TEXTS), model.preprocess(PASSAGES)]
        loss = loss_fn(features, None)
        loss.backward()
    finally:
        del model.forward
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, widths


def test_grouped_chunks_give_the_stock_loss_and_gradient_with_less_padding(tiny_model):
    tiny_model.eval()  # no dropout: the only thing grouping may change is which rows share a dropout draw
    stock_loss, stock_grads, stock_widths = loss_and_grads(tiny_model, grouped=False)
    loss, grads, widths = loss_and_grads(tiny_model, grouped=True)
    assert loss == pytest.approx(stock_loss, rel=1e-5)
    assert grads.keys() == stock_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, stock_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    padded = sum(rows * width for rows, width in widths)
    stock_padded = sum(rows * width for rows, width in stock_widths)
    assert len(widths) == len(stock_widths) == 2 * 2 * 3  # 2 columns x 3 chunks, embedded twice (GradCache)
    assert padded < 0.8 * stock_padded
