"""The training step: alpha 0 is plain next-token CE, and extreme CF logits stay finite."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _batch(trainer, rows):
    batch = trainer.data_collator(rows)
    return batch, int((batch["labels"] != -100).sum())


def test_alpha0_loss_is_plain_cross_entropy(small_config, tmp_path):
    """Reference: each row unpadded, prompt ids + title + EOS as one sequence, HF-style shifted CE."""
    from tca4rec.llm.train import build_trainer

    trainer, _ = build_trainer(small_config(tmp_path / "run", alpha=0.0))
    host = trainer.model.eval()  # no LoRA dropout: both sides see the same function
    # LoRA B is zero at init; perturb it so the adapter takes part in the comparison.
    torch.manual_seed(1)
    for name, p in host.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    batch, tokens = _batch(trainer, [0, 3, 5])
    loss = trainer.compute_loss(host, batch, num_items_in_batch=torch.tensor(tokens))

    nll, count = 0.0, 0
    for r in range(3):
        real = batch["attention_mask"][r].bool()
        target = batch["target_tokens"][r][batch["target_tokens"][r] >= 0]
        ids = torch.cat([batch["input_ids"][r][real], target])[None]
        logits = host.llm(input_ids=ids).logits[0, real.sum() - 1: -1]  # positions predicting the target
        nll += F.cross_entropy(logits.double(), target, reduction="sum").item()
        count += len(target)
    assert count == tokens
    assert math.isclose(loss.item(), nll / count, rel_tol=1e-4)


def test_extreme_cf_logits_give_finite_loss_and_grads(small_config, cf_run, tmp_path):
    from tca4rec.llm.train import build_trainer

    trainer, _ = build_trainer(small_config(tmp_path / "run", alpha=0.5, cf=str(cf_run)))
    signals = trainer.tca
    real_signals = signals.cf_signals

    def extreme(users, histories, trie_order=False, logits=True):
        logits, history_cf, user_cf = real_signals(users, histories, trie_order, logits)
        wild = torch.full_like(logits, -1e4)
        wild[:, 1::3] = 1e4
        wild[:, 2::5] = float("-inf")
        wild[:, 0] = float("-inf")
        return wild, history_cf, user_cf

    signals.cf_signals = extreme
    batch, tokens = _batch(trainer, [0, 1, 2, 3])
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=torch.tensor(tokens))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_trie_order_logits_are_the_item_logits_permuted(small_config, cf_run, tmp_path):
    """The trainer asks for logits in trie order (permuted item table); they must be the item-order
    logits with their columns permuted, and the embeddings must not change."""
    from tca4rec.llm.train import build_trainer

    trainer, _ = build_trainer(small_config(tmp_path / "run", alpha=0.5, cf=str(cf_run)))
    signals = trainer.tca
    batch, _ = _batch(trainer, [0, 1, 2, 3])
    plain, history_cf, user_cf = signals.cf_signals(batch["users"], batch["histories"])
    permuted, history_cf2, user_cf2 = signals.cf_signals(batch["users"], batch["histories"], trie_order=True)
    assert permuted.shape == (4, signals.dataset.num_items)
    assert torch.allclose(permuted, plain[:, 1:][:, signals.trie.order], rtol=1e-5, atol=1e-5)
    assert torch.equal(history_cf, history_cf2) and torch.equal(user_cf, user_cf2)
    history_cf3, user_cf3 = signals.cf_embeddings(batch["users"], batch["histories"])  # decoding's call: no logits
    assert torch.equal(history_cf, history_cf3) and torch.equal(user_cf, user_cf3)
    zeros, history_cf4, user_cf4 = signals.cf_signals(batch["users"], batch["histories"], trie_order=True,
                                                      logits=False)  # alpha 0: the embeddings alone
    assert zeros.shape == permuted.shape and not zeros.any()
    assert torch.equal(history_cf, history_cf4) and torch.equal(user_cf, user_cf4)
    labels = signals.ct.soft_labels(permuted, batch["items"], alpha=0.5, trie_order=True)
    reference = signals.ct.soft_labels(plain[:, 1:], batch["items"], alpha=0.5)
    assert torch.equal(labels.index, reference.index)
    assert (labels.weight - reference.weight).abs().max() <= 1e-5
