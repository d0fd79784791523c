"""Token-level collaborative alignment: the title trie, CF logits -> soft token labels, the soft loss."""

from tca4rec.align.loss import soft_ntp_loss
from tca4rec.align.tokenizer import CollaborativeTokenizer, SoftLabels
from tca4rec.align.trie import TitleTrie

__all__ = ["TitleTrie", "CollaborativeTokenizer", "SoftLabels", "soft_ntp_loss"]
