"""Decoding: beam search constrained to the title trie (every output is a real item)."""

from tca4rec.decode.beam import BeamSearchConfig, BeamSearchResult, constrained_beam_search

__all__ = ["BeamSearchConfig", "BeamSearchResult", "constrained_beam_search"]
