import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualpath.errors import SpecError
from dualpath.kvlayout import KVLayout, PrefixTrie, chain_block_ids


def test_block_geometry():
    layout = KVLayout(num_layers=61, kv_bytes_per_token_per_layer=656, block_tokens=64)
    assert layout.layer_block_bytes == 64 * 656
    assert layout.full_block_bytes == 61 * 64 * 656
    assert layout.layer_offset_bytes(3) == 3 * 64 * 656
    assert layout.num_blocks(129) == 3 and layout.num_full_blocks(129) == 2
    with pytest.raises(SpecError):
        layout.layer_offset_bytes(61)


def test_chained_ids_identify_the_whole_prefix():
    a = chain_block_ids(list(range(40)), 8)
    b = chain_block_ids([*list(range(16)), 99, *list(range(17, 40))], 8)
    assert len(a) == 5 and a[:2] == b[:2] and a[2:] != b[2:] and not set(a[2:]) & set(b[2:])


def test_trie_hit_tokens():
    trie = PrefixTrie()
    assert trie.insert([1, 2, 3]) == 3
    assert trie.insert([1, 2, 4]) == 1
    assert trie.match([1, 2, 4, 5]) == 3
    assert trie.match([2, 1]) == 0
    assert trie.hit_tokens([1, 2, 3], num_tokens=1100, block_tokens=512) == 1100  # partial last block
    assert len(trie) == 4


@given(st.lists(st.lists(st.integers(0, 3), max_size=6), max_size=12))
def test_trie_match_is_longest_common_prefix_with_any_inserted(prompts):
    trie = PrefixTrie()
    for p in prompts:
        trie.insert(p)
    probe = [0, 1, 2, 3, 0, 1]
    best = 0
    for p in prompts:
        n = 0
        while n < min(len(p), len(probe)) and p[n] == probe[n]:
            n += 1
        best = max(best, n)
    assert trie.match(probe) == best
