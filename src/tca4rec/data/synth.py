"""A seeded synthetic dataset in the release format, for demos and tests without real data.

The catalog looks like Amazon toys: brands in categories, each brand with product lines whose
items share a title prefix ("Brickton Harbor Patrol Rescue Boat 40213 Building Kit (312
Pieces)"), model numbers, attributes, and a few re-listed items with identical titles.
User sequences carry two signals so that CF models, LLMs and their combination all have
something to learn:

- collaborative: a product line is a sequel chain (item k tends to follow item k-1 of its
  line), and item popularity is Zipf-skewed, so "last item -> next item" counts predict;
- semantic: each user favors a few brands, visible in the titles, so the brand of the next
  item tends to match the brand of earlier ones.

Rows are built exactly like the release (one row per interaction after a user's first,
history = up to ``max_history`` previous items, global time cut train < valid < test).
Generation is vectorized (items in bulk, users per step), so a million items take seconds;
only title formatting is a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tca4rec.data.dataset import RecDataset
from tca4rec.data.formats import save_dataset
from tca4rec.data.prepare import build_splits
from tca4rec.errors import ConfigError
from tca4rec.validate import check_seed

DAY = 86_400
START_TIME = 1_420_070_400  # 2015-01-01, in the range of the release's timestamps
MAX_TITLE_CHARS = 100

# Per category: title template and word pools. {brand} {line} come first, so every item of
# a line shares a prefix, like real listings.
CATEGORIES: dict[str, tuple[str, dict[str, list[str]]]] = {
    "building": ("{brand} {line} {thing} Building Kit {model} ({count} Pieces)", {
        "thing": ["Fire Station", "Rescue Boat", "Space Shuttle", "Police Car", "Castle", "Dragon Tower",
                  "Race Truck", "Train Set", "Pirate Ship", "Robot Base", "Farm House", "Mining Rig"]}),
    "dolls": ("{brand} {line} {name} Doll with {extra}", {
        "name": ["Ava", "Mia", "Lily", "Zoe", "Chloe", "Emma", "Ruby", "Nora", "Isla", "Maya"],
        "extra": ["Pet Puppy", "Hair Accessories", "Two Outfits", "Beach Set", "Tiara and Wand", "Backpack"]}),
    "games": ("{brand} {line}: {thing} Board Game ({extra} Edition)", {
        "thing": ["Treasure Hunt", "Island Escape", "Word Builder", "Castle Siege", "Star Traders",
                  "Dungeon Quest", "Color Match", "Train Tycoon"],
        "extra": ["Family", "Deluxe", "Travel", "Classic", "Anniversary", "Party"]}),
    "puzzles": ("{brand} {line} {thing} Jigsaw Puzzle, {extra}", {
        "thing": ["Mountain Lake", "City Skyline", "Autumn Forest", "Hot Air Balloons", "Ocean Reef",
                  "Night Sky", "Vintage Map", "Garden Cottage"],
        "extra": ["1000 Pieces", "500 Pieces", "300 Large Pieces", "Glow in the Dark"]}),
    "figures": ("{brand} {line} {name} {size}-Inch Figure with {extra}", {
        "name": ["Captain Nova", "Shadow Hawk", "Iron Ranger", "Storm Rider", "Night Fox", "Blaze",
                 "Commander Rex", "Titan"],
        "extra": ["Blaster", "Jet Pack", "Battle Armor", "Light-Up Sword", "Shield", "Vehicle"]}),
    "plush": ("{brand} {line} {thing} Plush, {extra}, {size} Inch", {
        "thing": ["Bunny", "Teddy Bear", "Unicorn", "Penguin", "Fox", "Elephant", "Dinosaur", "Kitten"],
        "extra": ["Super Soft", "Washable", "Weighted", "Sleepy Time", "Rainbow"]}),
    "vehicles": ("{brand} {line} {thing} RC {extra} {model}", {
        "thing": ["Monster Truck", "Rock Crawler", "Drift Car", "Stunt Car", "Race Buggy", "Off-Road Jeep"],
        "extra": ["Car with Battery", "Toy for Kids", "Car 2.4GHz", "Truck"]}),
    "crafts": ("{brand} {line} {thing} Craft Kit, {count} {extra}", {
        "thing": ["Bracelet Making", "Slime", "Painting", "Sticker Mosaic", "Pottery Wheel", "Sewing"],
        "extra": ["Beads", "Colors", "Stickers", "Accessories", "Charms", "Tools"]}),
}
BRAND_HEADS = ["Brick", "Star", "Happy", "Tiny", "Wonder", "Bright", "Zoom", "Maple", "Cosmo", "Pixel", "Sunny",
               "Jolly", "Nimble", "Rocket", "Velvet", "Lucky", "Mighty", "Cozy", "Dandy", "Echo"]
BRAND_TAILS = ["ton", "works", "land", "craft", "kids", "play", "toys", "box", "nest", "forge", "ville", "wood"]
LINE_WORDS = ["City", "Harbor Patrol", "Galaxy", "Adventure", "Classic", "Junior", "Legends", "Explorer",
              "Creator", "Friends", "Kingdom", "Ocean", "Jungle", "Arctic", "Turbo", "Magic", "Ninja", "Safari",
              "Deluxe", "Heroes", "Sparkle", "Dream", "Pro", "Wild"]


@dataclass(frozen=True)
class SynthConfig:
    """Size and signal strengths of a synthetic dataset (defaults: a demo that trains fast)."""

    num_items: int = 1500
    num_users: int = 1000
    seed: int = 0
    max_history: int = 10
    items_per_brand: int = 12  # sets the number of brands
    line_length: tuple[int, int] = (3, 8)  # min, max items per product line (a sequel chain)
    mean_sequence_length: float = 9.0  # interactions per user (geometric, at least 3)
    chain_prob: float = 0.45  # next item = the successor of the last item in its line
    taste_prob: float = 0.35  # else: an item of one of the user's favorite brands
    favorite_brands: int = 2
    zipf_exponent: float = 1.0  # popularity skew of items (and brands)
    duplicate_title_rate: float = 0.02  # re-listed items that copy another item's title
    split_fractions: tuple[float, float] = (0.8, 0.1)  # train, valid; test gets the rest

    def validate(self) -> None:
        check_seed(self.seed, "--seed")
        if self.num_items < 10 or self.num_users < 2:
            raise ConfigError("synthetic data needs at least 10 items and 2 users")
        if self.max_history < 1 or self.favorite_brands < 1 or self.items_per_brand < 2:
            raise ConfigError("max_history, favorite_brands must be >= 1 and items_per_brand >= 2")
        if not 2 <= self.line_length[0] <= self.line_length[1]:
            raise ConfigError(f"line_length must be (min, max) with 2 <= min <= max, got {self.line_length}")
        probs = (self.chain_prob, self.taste_prob, self.duplicate_title_rate)
        if not all(0 <= p <= 1 for p in probs) or self.chain_prob + self.taste_prob > 1:
            raise ConfigError("chain_prob, taste_prob and duplicate_title_rate must be in [0, 1], chain + taste <= 1")
        if self.mean_sequence_length < 3:
            raise ConfigError("mean_sequence_length must be >= 3")
        train, valid = self.split_fractions
        if not (0 < train and 0 < valid and train + valid < 1):
            raise ConfigError(f"split_fractions must be positive with sum < 1, got {self.split_fractions}")


@dataclass(frozen=True)
class _Catalog:
    titles: list[str]  # index 0 = padding
    brands: list[str]
    raw_ids: list[str]
    brand_of: np.ndarray  # int64 [N + 1], brand index per item
    successor: np.ndarray  # int64 [N + 1], next item of the same line, 0 at a line's end
    popularity: np.ndarray  # float64 [N + 1], sampling weight (0 for padding)


def synthesize(config: SynthConfig = SynthConfig()) -> RecDataset:
    """Build the synthetic dataset in memory (deterministic for a given config)."""
    config.validate()
    rng = np.random.default_rng(config.seed)
    catalog = _make_catalog(config, rng)
    sequences, times = _make_sequences(config, catalog, rng)
    splits = build_splits(sequences, times, config.max_history, config.split_fractions)
    return RecDataset(f"synth-{config.num_items}x{config.num_users}-s{config.seed}", catalog.titles, catalog.brands,
                      splits, config.num_users, raw_ids=catalog.raw_ids)


def write_synthetic_dataset(out_dir: str | Path, config: SynthConfig = SynthConfig()) -> Path:
    """Write the synthetic dataset to ``out_dir`` (must not exist) in the release format."""
    return save_dataset(synthesize(config), out_dir)


def _brand_names(count: int, rng: np.random.Generator) -> list[str]:
    names = [h + t for h in BRAND_HEADS for t in BRAND_TAILS]
    names = [names[k] for k in rng.permutation(len(names))]
    # Beyond 240 brands, a number keeps names unique and readable ("Starworks 2").
    return [names[k % len(names)] + ("" if k < len(names) else f" {k // len(names) + 1}") for k in range(count)]


def _line_name(brand: int, line: int) -> str:
    """Brands get different line names; a brand with more lines than words numbers them."""
    word = LINE_WORDS[(brand * 7 + line) % len(LINE_WORDS)]
    cycle = line // len(LINE_WORDS)
    return word if cycle == 0 else f"{word} {cycle + 1}"


def _split_into_lines(brand_sizes: np.ndarray, line_length: tuple[int, int], rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Cut each brand's items into product lines: (first item of each line, its brand), lines in item order.

    Every brand draws enough line lengths in [min, max] to cover it; the last line is cut short.
    """
    drawn = -(-brand_sizes // line_length[0])  # ceil: always enough lines
    brand_of_draw = np.repeat(np.arange(len(brand_sizes)), drawn)
    lengths = rng.integers(line_length[0], line_length[1] + 1, size=len(brand_of_draw))
    end_in_brand = np.cumsum(lengths)
    draw_offset = np.cumsum(drawn) - drawn
    end_in_brand -= np.concatenate([[0], end_in_brand])[draw_offset][brand_of_draw]
    start_in_brand = end_in_brand - lengths
    keep = start_in_brand < brand_sizes[brand_of_draw]
    brand_first = np.cumsum(brand_sizes) - brand_sizes
    return brand_first[brand_of_draw[keep]] + start_in_brand[keep], brand_of_draw[keep]


def _make_catalog(config: SynthConfig, rng: np.random.Generator) -> _Catalog:
    """Titles and structure, drawn in bulk per item (a million items take seconds); only the
    string formatting is a Python loop."""
    n = config.num_items
    num_brands = max(2, n // config.items_per_brand)  # validate() ensures n >= 2 * num_brands
    brand_names = _brand_names(num_brands, rng)
    brand_category = rng.integers(len(CATEGORIES), size=num_brands)
    # Brand sizes: every brand has 2 items, the rest go to brands with a mild (sqrt-Zipf) skew.
    size_weight = 1.0 / np.arange(1, num_brands + 1) ** (config.zipf_exponent / 2)
    extra = rng.choice(num_brands, size=n - 2 * num_brands, p=size_weight / size_weight.sum())
    brand_sizes = 2 + np.bincount(extra, minlength=num_brands)

    line_start, line_brand = _split_into_lines(brand_sizes, config.line_length, rng)  # [lines]
    line_of = np.repeat(np.arange(len(line_start)), np.diff(np.append(line_start, n)))  # [n], items 0-based
    position = np.arange(n) - line_start[line_of]  # k: place in the line
    brand_line_first = np.searchsorted(line_brand, np.arange(num_brands))
    line_number = np.arange(len(line_start)) - brand_line_first[line_brand]  # lines_done of the brand
    model_base = rng.integers(10, 90, size=len(line_start)) * 100 + line_number * 10
    # Word choices: a line's items share its words; after the first, each word changes with p = 0.5.
    word_index: dict[tuple[str, str], np.ndarray] = {}
    for name, (_, pools) in CATEGORIES.items():
        for key, pool in pools.items():
            line_word = rng.integers(len(pool), size=len(line_start))[line_of]
            redraw = (position > 0) & (rng.random(n) < 0.5)
            word_index[name, key] = np.where(redraw, rng.integers(len(pool), size=n), line_word)
    count = rng.integers(5, 100, size=n) * 5
    size = rng.choice([6, 8, 10, 12, 14, 18], size=n)
    alphabet = np.array(list("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"))
    asins = ["B0" + "".join(chars) for chars in alphabet[rng.integers(len(alphabet), size=(n, 8))].tolist()]

    category_names = list(CATEGORIES)
    item_brand = line_brand[line_of]
    titles = [""]
    for j, (b, line, k) in enumerate(zip(item_brand.tolist(), line_of.tolist(), position.tolist())):
        category = category_names[brand_category[b]]
        template, pools = CATEGORIES[category]
        fields = {key: pool[word_index[category, key][j]] for key, pool in pools.items()}
        title = template.format(brand=brand_names[b], line=f"{_line_name(b, int(line_number[line]))} {k + 1}",
                                model=int(model_base[line]) + k, count=int(count[j]), size=int(size[j]), **fields)
        titles.append(title[:MAX_TITLE_CHARS].rstrip())
    brand_of = np.concatenate([[0], item_brand])
    line_end = np.append(line_start[1:], n)[line_of]
    successor = np.concatenate([[0], np.where(np.arange(n) + 1 < line_end, np.arange(n) + 2, 0)])
    # Re-listed items: a few repeat the previous item's title (the release keeps such duplicates).
    for i in np.flatnonzero(rng.random(n + 1) < config.duplicate_title_rate):
        if i > 1 and brand_of[i - 1] == brand_of[i]:
            titles[i] = titles[i - 1]
    popularity = rng.permutation(1.0 / np.arange(1, n + 1) ** config.zipf_exponent) * 0.7 ** position
    return _Catalog(titles, [""] + [brand_names[b] for b in item_brand.tolist()], [""] + asins, brand_of, successor,
                    np.concatenate([[0.0], popularity]))


def _make_sequences(config: SynthConfig, catalog: _Catalog, rng: np.random.Generator
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each user's items and timestamps, oldest first. Vectorized over users, one step at a time."""
    u = config.num_users
    lengths = 3 + rng.geometric(1.0 / (config.mean_sequence_length - 2), size=u) - 1
    steps = int(lengths.max())
    # Items sorted by brand so that "an item of brand b" is a range of one cumulative sum.
    order = np.argsort(catalog.brand_of[1:], kind="stable") + 1
    cumulative = np.cumsum(catalog.popularity[order])  # [N]
    brand_bounds = np.searchsorted(catalog.brand_of[order], np.arange(catalog.brand_of.max() + 2))
    brand_mass = np.diff(np.concatenate([[0.0], cumulative])[brand_bounds])
    # Tastes are spread wider than sales: a brand's fan base grows like the root of its mass.
    taste_weight = np.sqrt(brand_mass)
    favorites = rng.choice(len(brand_mass), size=(u, config.favorite_brands), p=taste_weight / taste_weight.sum())

    def sample_in_brands(brand: np.ndarray) -> np.ndarray:
        low = np.concatenate([[0.0], cumulative])[brand_bounds[brand]]
        high = cumulative[brand_bounds[brand + 1] - 1]
        index = np.searchsorted(cumulative, low + rng.random(len(brand)) * (high - low), side="right")
        return order[np.minimum(index, len(order) - 1)]

    items = np.zeros((u, steps), dtype=np.int64)
    items[:, 0] = sample_in_brands(favorites[np.arange(u), rng.integers(config.favorite_brands, size=u)])
    for t in range(1, steps):
        last = items[:, t - 1]
        choice = rng.random(u)
        taste = sample_in_brands(favorites[np.arange(u), rng.integers(config.favorite_brands, size=u)])
        popular = order[np.minimum(np.searchsorted(cumulative, rng.random(u) * cumulative[-1], side="right"),
                                   len(order) - 1)]
        next_item = np.where(choice < config.chain_prob + config.taste_prob, taste, popular)
        items[:, t] = np.where((choice < config.chain_prob) & (catalog.successor[last] > 0),
                               catalog.successor[last], next_item)
    # Users start at different times across two years and come back every few days.
    start = START_TIME + rng.integers(0, 730, size=u) * DAY
    gaps = rng.geometric(1 / 20, size=(u, steps)) * DAY
    times = start[:, None] + np.cumsum(gaps, axis=1)
    return ([items[k, :lengths[k]] for k in range(u)], [times[k, :lengths[k]] for k in range(u)])
