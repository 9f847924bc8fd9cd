"""Synthetic shop: a catalogue, customers with latent segments, their behavioural events and a social
graph, plus the ground truth (segment, churn, preferences) that profiles and models should recover.

Pure NumPy/pandas (no Django). Events stream in chunks and are vectorised per batch of customers,
so 1M customers / 50M events run in bounded memory. Every random draw comes from a generator seeded
by (seed, batch, purpose), so the four public functions agree with each other and repeat exactly.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

import numpy as np
import pandas as pd
import pyarrow as pa

SEGMENTS = ("bargain_hunter", "loyal_big_spender", "window_shopper", "category_explorer", "churner")
CHURNER = SEGMENTS.index("churner")
EVENT_TYPES = ("view", "search", "add_to_cart", "remove_from_cart", "purchase", "refund", "rating", "share")
EVENT_COLUMNS = (
    "event_id", "customer_id", "item_id", "event_type", "timestamp", "quantity", "value", "currency",
    "rating", "session_id", "channel", "device", "order_id", "context",
)
CHUNK_ROWS = 200_000
CURRENCY = "USD"
CHANNELS = ("web", "app", "store")
DEVICES = ("desktop", "mobile", "tablet")
REGIONS = ("Northeast", "Midwest", "South", "West", "Mountain", "Pacific")
RELATIONS = ("follow", "referral", "share")
GENDERS = ("female", "male", "other")

_DAY = 86_400.0
# Customers of one batch are cut into groups of about this many events, processed one at a time,
# so memory follows this figure and not customers_per_batch × events per customer.
_GROUP_EVENTS = 250_000


class _Purpose(IntEnum):
    """Last element of a stream's seed: (seed, batch, purpose) per batch, (seed, purpose) for the whole
    dataset. Never 0: SeedSequence ignores trailing zeros."""

    CORE = 1
    PREFERENCES = 2
    PROFILE = 3
    EVENTS = 4
    # seeds of whole-dataset streams: (seed, purpose)
    ALLOCATION = 1001
    CATALOGUE = 1002
    EDGES = 1003


@dataclass(frozen=True)
class ShopConfig:
    customers: int
    events: int  # exact total over all chunks of generate_events
    seed: int = 0
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    days: int = 365
    categories: int = 12
    items: int | None = None
    # The unit of random streams: a different batch size makes a different (equally valid) shop.
    customers_per_batch: int = 20_000

    def __post_init__(self):
        if self.customers < 1 or self.events < 0 or self.days < 1 or self.customers_per_batch < 1:
            raise ValueError("customers, days and customers_per_batch must be positive, events non-negative")
        if self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        if not 1 <= self.categories <= len(_CATALOGUE):
            raise ValueError(f"categories must be between 1 and {len(_CATALOGUE)}")
        if self.items is not None and self.items < self.categories:
            raise ValueError("items must be at least the number of categories")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")

    @property
    def item_count(self) -> int:
        return self.items if self.items is not None else max(200, min(50_000, self.customers // 5))

    @property
    def batches(self) -> list[tuple[int, int]]:
        """(first, stop) global customer indices of each batch."""
        size = self.customers_per_batch
        return [(lo, min(lo + size, self.customers)) for lo in range(0, self.customers, size)]


@dataclass(frozen=True)
class _Prototype:
    share: float  # of the population
    activity: float  # multiplier of the heavy-tailed activity rate
    focus: float  # Dirichlet mass added to the favourite category
    spread: float  # Dirichlet mass on every category: higher explores more
    price_sensitivity: float  # 1: the cheap end of a category, 0: the expensive end
    view_to_cart: float
    cart_to_purchase: float
    refund: float
    rating: float
    share_item: float
    search: float  # a session opens with a search
    journeys_per_session: float
    peak_hour: float  # UTC
    devices: tuple[float, float, float]  # desktop, mobile, tablet
    channels: tuple[float, float, float]  # web, app, store
    loyalty: float
    age: float


_PROTOTYPES = (
    _Prototype(  # bargain_hunter
        share=0.25, activity=1.0, focus=8.0, spread=0.3, price_sensitivity=0.85,
        view_to_cart=0.22, cart_to_purchase=0.55, refund=0.05, rating=0.15, share_item=0.02, search=0.6,
        journeys_per_session=3.0, peak_hour=12.5, devices=(0.45, 0.45, 0.10), channels=(0.60, 0.30, 0.10),
        loyalty=0.20, age=34,
    ),
    _Prototype(  # loyal_big_spender
        share=0.15, activity=1.2, focus=10.0, spread=0.3, price_sensitivity=0.12,
        view_to_cart=0.45, cart_to_purchase=0.80, refund=0.03, rating=0.35, share_item=0.03, search=0.3,
        journeys_per_session=2.0, peak_hour=20.0, devices=(0.50, 0.35, 0.15), channels=(0.40, 0.35, 0.25),
        loyalty=0.80, age=46,
    ),
    _Prototype(  # window_shopper
        share=0.25, activity=1.6, focus=6.0, spread=0.4, price_sensitivity=0.50,
        view_to_cart=0.06, cart_to_purchase=0.25, refund=0.08, rating=0.10, share_item=0.06, search=0.5,
        journeys_per_session=5.0, peak_hour=22.0, devices=(0.15, 0.75, 0.10), channels=(0.30, 0.68, 0.02),
        loyalty=0.15, age=27,
    ),
    _Prototype(  # category_explorer
        share=0.15, activity=1.3, focus=3.0, spread=1.0, price_sensitivity=0.45,
        view_to_cart=0.18, cart_to_purchase=0.50, refund=0.05, rating=0.30, share_item=0.05, search=0.7,
        journeys_per_session=4.0, peak_hour=18.0, devices=(0.35, 0.50, 0.15), channels=(0.55, 0.40, 0.05),
        loyalty=0.35, age=38,
    ),
    _Prototype(  # churner: ordinary tastes, a high refund rate, and activity that fades until it stops
        share=0.20, activity=1.0, focus=7.0, spread=0.3, price_sensitivity=0.55,
        view_to_cart=0.18, cart_to_purchase=0.45, refund=0.12, rating=0.10, share_item=0.02, search=0.4,
        journeys_per_session=3.0, peak_hour=19.0, devices=(0.30, 0.60, 0.10), channels=(0.50, 0.45, 0.05),
        loyalty=0.10, age=35,
    ),
)
assert len(_PROTOTYPES) == len(SEGMENTS)


def _proto(name: str) -> np.ndarray:
    return np.array([getattr(p, name) for p in _PROTOTYPES], dtype="float64")


# (top-level category, brands, coloured?, ((subcategory, ((product, typical price USD), ...)), ...))
_CATALOGUE = (
    ("Electronics", ("Voltra", "Nexon", "Pixelia", "Auralis", "Kiroto", "Zenbyte"), True, (
        ("Phones", (("Smartphone 128GB", 499), ("Smartphone 256GB", 699), ("Phone Case", 19), ("Fast Charger 30W", 29))),
        ("Laptops", (("Laptop 14\"", 899), ("Laptop 16\"", 1299), ("Laptop Sleeve", 25), ("USB-C Dock", 119))),
        ("Audio", (("Wireless Earbuds", 89), ("Over-Ear Headphones", 179), ("Bluetooth Speaker", 69))),
    )),
    ("Home", ("Hearthly", "Casavia", "Nordhem", "Kettlewick", "Lumora"), True, (
        ("Kitchen", (("Kettle 1.7L", 39), ("Toaster 2-Slice", 45), ("Blender 1.5L", 79), ("Chef's Knife 20cm", 49), ("Frying Pan 28cm", 35))),
        ("Furniture", (("Desk Chair", 189), ("Bookshelf", 129), ("Side Table", 79))),
        ("Decor", (("Table Lamp", 45), ("Wall Clock", 29), ("Throw Pillow", 19))),
    )),
    ("Fashion", ("Marlowe", "Tessuto", "Northline", "Ardent", "Vela"), True, (
        ("Shoes", (("Running Sneakers", 89), ("Leather Boots", 139), ("Canvas Sneakers", 55), ("Sandals", 39))),
        ("Women", (("Summer Dress", 59), ("Wool Coat", 179), ("Silk Blouse", 65))),
        ("Men", (("Chino Trousers", 59), ("Oxford Shirt", 49), ("Denim Jacket", 89))),
    )),
    ("Books", ("Penwright", "Harbor House", "Quillstone", "Bluefern Press"), False, (
        ("Fiction", (("Paperback Novel", 12), ("Hardcover Thriller", 24), ("Fantasy Box Set", 49))),
        ("Non-fiction", (("History Hardcover", 28), ("Cookbook", 25), ("Biography", 18))),
        ("Children", (("Picture Book", 9), ("Activity Book", 7), ("Bedtime Stories", 14))),
    )),
    ("Sports", ("Stridex", "Apexa", "Kinetiq", "Trailhawk"), True, (
        ("Running", (("Running Shorts", 29), ("GPS Watch", 199), ("Hydration Vest", 69))),
        ("Cycling", (("Road Helmet", 79), ("Bike Light Set", 35), ("Cycling Jersey", 59))),
        ("Fitness", (("Yoga Mat", 29), ("Dumbbell Set 10kg", 49), ("Resistance Bands", 19))),
    )),
    ("Beauty", ("Velvetine", "Aurelle", "Bloomwell", "Maison Lys"), False, (
        ("Skincare", (("Face Moisturiser 50ml", 24), ("Vitamin C Serum", 32), ("Sunscreen SPF50", 18))),
        ("Makeup", (("Matte Lipstick", 16), ("Mascara", 14), ("Foundation 30ml", 28))),
        ("Fragrance", (("Eau de Parfum 50ml", 79), ("Body Mist", 22), ("Scented Candle", 26))),
    )),
    ("Toys", ("Playforge", "Tinkerly", "Bricktopia", "Wobblo"), True, (
        ("Games", (("Board Game", 35), ("Card Game", 15), ("Party Game", 25))),
        ("Puzzles", (("1000-Piece Puzzle", 22), ("3D Puzzle", 29), ("Puzzle Cube", 12))),
        ("Building", (("Building Block Set", 59), ("Robot Kit", 89), ("Marble Run", 45))),
    )),
    ("Grocery", ("Greenacre", "Roastery Row", "Pantrio", "Hillfold"), False, (
        ("Coffee", (("Whole Bean Coffee 1kg", 24), ("Espresso Capsules x50", 17), ("Ground Coffee 500g", 11))),
        ("Snacks", (("Dark Chocolate Bar", 3.5), ("Mixed Nuts 500g", 9), ("Granola 750g", 6))),
        ("Pantry", (("Olive Oil 1L", 12), ("Basmati Rice 2kg", 7), ("Pasta 500g", 2.5))),
    )),
    ("Garden", ("Verdant", "Fieldcraft", "Sunhollow", "Mossway"), True, (
        ("Tools", (("Pruning Shears", 25), ("Garden Hose 25m", 39), ("Cordless Trimmer", 129))),
        ("Plants", (("Olive Tree", 49), ("Herb Seed Kit", 14), ("Succulent Set", 24))),
        ("Outdoor", (("Gas Grill", 349), ("Patio Chair", 89), ("Solar Lights x6", 29))),
    )),
    ("Automotive", ("Motorline", "Gearhaus", "Roadwise", "Torqa"), True, (
        ("Parts", (("Brake Pad Set", 45), ("Wiper Blades", 22), ("Car Battery", 129))),
        ("Accessories", (("Dash Cam", 89), ("Phone Mount", 19), ("Seat Covers", 49))),
        ("Care", (("Car Wax", 15), ("Microfibre Towels x6", 12), ("Pressure Washer", 159))),
    )),
    ("Health", ("Vitalis", "Carewell", "Purenova", "Medora"), False, (
        ("Vitamins", (("Multivitamin x90", 15), ("Omega-3 x120", 19), ("Vitamin D3 x60", 9))),
        ("Personal Care", (("Electric Toothbrush", 69), ("Shaver", 89), ("Hair Dryer", 49))),
        ("Medical", (("Blood Pressure Monitor", 49), ("Digital Thermometer", 15), ("First Aid Kit", 25))),
    )),
    ("Pets", ("Pawsome", "Whiskerly", "Furbright", "Tailwise"), True, (
        ("Dog", (("Dog Food 12kg", 54), ("Dog Bed", 59), ("Chew Toy", 9))),
        ("Cat", (("Cat Food 4kg", 24), ("Scratching Post", 39), ("Cat Litter 10L", 12))),
        ("Aquarium", (("Aquarium 60L", 119), ("Fish Food", 8), ("Water Filter", 35))),
    )),
    ("Office", ("Deskwise", "Inkmark", "Paperly", "Ledgerline"), True, (
        ("Stationery", (("Notebook A5", 9), ("Gel Pens x10", 8), ("Weekly Planner", 19))),
        ("Desks", (("Standing Desk", 349), ("Monitor Arm", 89), ("Desk Organiser", 25))),
        ("Printing", (("Inkjet Printer", 129), ("Printer Paper x500", 9), ("Toner Cartridge", 59))),
    )),
    ("Music", ("Tonewood", "Echolane", "Resona", "Cadenza"), True, (
        ("Instruments", (("Acoustic Guitar", 249), ("Digital Piano", 499), ("Ukulele", 59))),
        ("Accessories", (("Guitar Strings", 12), ("Music Stand", 29), ("Capo", 14))),
        ("Vinyl", (("Vinyl LP", 28), ("Record Cleaner", 19), ("Turntable", 199))),
    )),
    ("Baby", ("Littlenest", "Cuddlo", "Tinystep", "Babble"), True, (
        ("Gear", (("Stroller", 299), ("Car Seat", 199), ("Baby Carrier", 89))),
        ("Feeding", (("Bottle Set", 24), ("High Chair", 129), ("Bibs x5", 14))),
        ("Nursery", (("Crib", 249), ("Baby Monitor", 99), ("Night Light", 19))),
    )),
    ("Jewelry", ("Aurum & Ash", "Lustra", "Gemora", "Solenne"), True, (
        ("Rings", (("Silver Ring", 79), ("Gold Ring", 349), ("Stacking Rings", 59))),
        ("Necklaces", (("Pendant Necklace", 129), ("Chain Necklace", 89), ("Charm Bracelet", 69))),
        ("Watches", (("Analogue Watch", 149), ("Smartwatch Band", 29), ("Dress Watch", 259))),
    )),
)
_COLOURS = ("black", "white", "grey", "navy", "red", "green", "beige", "blue")

_FIRST_NAMES = {
    "female": ("Anna", "Maria", "Emma", "Olivia", "Sophia", "Mia", "Chloe", "Grace", "Laura", "Nora", "Ella", "Zoe", "Aisha", "Priya", "Hana", "Lucia"),
    "male": ("James", "Liam", "Noah", "Lucas", "Ethan", "Mateo", "Leo", "Daniel", "Omar", "Ravi", "Kenji", "Samuel", "Felix", "Hugo", "Adam", "Diego"),
    "other": ("Alex", "Sam", "Jordan", "Taylor", "Robin", "Charlie", "Riley", "Jamie"),
}
_LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Martinez", "Brown", "Lee", "Nguyen", "Patel", "Kim", "Müller", "Rossi", "Silva",
    "Cohen", "Okafor", "Kowalski", "Andersen", "Dubois", "Tanaka", "Walker", "Hughes", "Novak", "Haddad", "Moreau", "Reyes",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
_AREA_CODES = ("212", "312", "415", "512", "617", "702", "206", "305", "404", "303")

# Events of a journey in the order they happen; the last two come days later (delivery).
_TEMPLATE = ("search", "view", "share", "add_to_cart", "remove_from_cart", "purchase", "rating", "refund")
_TEMPLATE_TYPE = np.array([EVENT_TYPES.index(t) for t in _TEMPLATE], dtype="int8")
_T_SEARCH, _T_VIEW, _T_SHARE, _T_CART, _T_REMOVE, _T_PURCHASE, _T_RATING, _T_REFUND = range(8)
# Median seconds from the previous event of the session (plus a 6 s floor: a repeat within 5 s
# would be dropped as a double click by ingestion's cleaning).
_GAP_MEDIAN_S = np.array([40.0, 35.0, 15.0, 40.0, 90.0, 120.0, 0.0, 0.0])
_SESSION_BREAK_S = 300.0


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _choose_rows(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn per row from the row's categorical distribution, given as cumulative sums."""
    return (u[:, None] >= cum[rows, :-1]).sum(axis=1)


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return np.log(p / (1.0 - p))


def _start(config: ShopConfig) -> tuple[int, float]:
    """Period start as epoch microseconds, and its seconds past midnight UTC."""
    start = pd.Timestamp(config.start).tz_convert("UTC")
    return start.value // 1000, (start - start.normalize()).total_seconds()


# --- strings without per-row Python ---------------------------------------------------------------

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_chars(raw: np.ndarray) -> np.ndarray:
    """(n, k) bytes → (n, 2k) ASCII hex digits."""
    out = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = _HEX[raw >> 4]
    out[:, 1::2] = _HEX[raw & 15]
    return out


def _fixed_strings(chars: np.ndarray) -> pa.Array:
    """(n, width) ASCII bytes → an Arrow string array, sharing the buffer."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(chars)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _hex_ids(rng: np.random.Generator, n: int, prefix: str) -> pa.Array:
    digits = _hex_chars(np.frombuffer(rng.bytes(8 * n), dtype=np.uint8).reshape(n, 8))
    head = np.broadcast_to(np.frombuffer(prefix.encode(), dtype=np.uint8), (n, len(prefix)))
    return _fixed_strings(np.hstack([head, digits]))


def _uuid4s(rng: np.random.Generator, n: int) -> pa.Array:
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = _hex_chars(raw)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for src, dst in ((slice(0, 8), slice(0, 8)), (slice(8, 12), slice(9, 13)), (slice(12, 16), slice(14, 18)),
                     (slice(16, 20), slice(19, 23)), (slice(20, 32), slice(24, 36))):
        out[:, dst] = digits[:, src]
    return _fixed_strings(out)


def _str(values) -> pd.api.extensions.ExtensionArray:
    return pd.array(values, dtype="str")


def _utc(epoch_us: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.array(epoch_us.view("datetime64[us]")).tz_localize("UTC")


def _external_ids(config: ShopConfig, lo: int, hi: int) -> pa.Array:
    """"C0000001"-style ids of customers lo..hi-1 (numbered from 1)."""
    width = max(7, len(str(config.customers)))
    number = np.arange(lo + 1, hi + 1, dtype="int64")
    digits = (number[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype="int64")) % 10 + ord("0")
    head = np.full((hi - lo, 1), ord("C"), dtype=np.uint8)
    return _fixed_strings(np.hstack([head, digits.astype(np.uint8)]))


# --- catalogue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalogue:
    """Items sorted by (category, price): position within a category is the price percentile."""

    frame: pd.DataFrame  # public columns, rows in the sorted order
    price: np.ndarray
    price_percentile: np.ndarray
    quality: np.ndarray  # latent mean rating
    category_start: np.ndarray
    category_count: np.ndarray
    by_popularity: np.ndarray  # per category block: item positions, most popular first
    queries: np.ndarray  # (items, 3) search phrases that lead to the item
    category_names: tuple[str, ...]
    category_popularity: np.ndarray  # share of customers whose favourite each category is


def _catalogue(config: ShopConfig) -> _Catalogue:
    rng = _rng(config.seed, _Purpose.CATALOGUE)
    spec = _CATALOGUE[: config.categories]
    n, n_cat = config.item_count, len(spec)
    names = tuple(top for top, *_ in spec)
    # Some categories are bigger and more popular than others (Zipf over a seeded order).
    rank = rng.permutation(n_cat)
    popularity = 1.0 / (rank + 2.0)
    popularity /= popularity.sum()
    counts = 1 + rng.multinomial(n - n_cat, popularity)

    category = np.repeat(np.arange(n_cat), counts)
    product_pick = rng.random(n)
    brand_pick = rng.random(n)
    colour_pick = rng.integers(0, len(_COLOURS), n)
    noise = rng.lognormal(0.0, 0.35, n)
    quality = np.clip(rng.normal(4.0, 0.5, n), 1.5, 5.0)
    launch = rng.integers(2018, 2026, n)

    products = [[(sub, name, price) for sub, items in subs for name, price in items] for _, _, _, subs in spec]
    titles, paths, brands, base, attrs, queries = [], [], [], np.empty(n), [], []
    for i in range(n):
        top, top_brands, coloured, _ = spec[category[i]]
        choices = products[category[i]]
        sub, product, typical = choices[int(product_pick[i] * len(choices))]
        brand = top_brands[int(brand_pick[i] * len(top_brands))]
        colour = _COLOURS[colour_pick[i]] if coloured else None
        titles.append(f"{brand} {product}" + (f", {colour.title()}" if colour else ""))
        paths.append(f"{top}/{sub}")
        brands.append(brand)
        base[i] = typical
        attrs.append({"launch_year": int(launch[i]), **({"colour": colour} if colour else {})})
        queries.append((product.lower(), f"{brand} {product}".lower(), f"{sub} {top}".lower()))
    price = np.maximum(0.99, np.round(base * noise) - 0.01)

    order = np.lexsort((price, category))
    category, price, quality = category[order], price[order], quality[order]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(n) - start[category]
    percentile = (position + 0.5) / counts[category]
    by_popularity = np.concatenate([s + rng.permutation(c) for s, c in zip(start, counts, strict=True)])
    # SKUs in a random order, so a SKU says nothing about price
    sku = np.array([f"SKU-{k + 1:06d}" for k in rng.permutation(n)], dtype=object)
    frame = pd.DataFrame({
        "sku": _str(sku),
        "title": _str(np.array(titles, dtype=object)[order]),
        "category_path": _str(np.array(paths, dtype=object)[order]),
        "brand": _str(np.array(brands, dtype=object)[order]),
        "price": price,
        "currency": _str([CURRENCY] * n),
        "attributes": np.array(attrs, dtype=object)[order],
    })
    return _Catalogue(
        frame=frame, price=price, price_percentile=percentile, quality=quality,
        category_start=start, category_count=counts, by_popularity=by_popularity,
        queries=np.array(queries, dtype=object)[order], category_names=names, category_popularity=popularity,
    )


def generate_items(config: ShopConfig) -> pd.DataFrame:
    """The catalogue: sku, title, category_path ("Top/Sub"), brand, price, currency, attributes."""
    return _catalogue(config).frame.sort_values("sku", ignore_index=True)


# --- customers' latent parameters ------------------------------------------------------------------


@dataclass(frozen=True)
class _Core:
    """What the event budget and the social graph need: cheap enough to compute for everyone."""

    segment: np.ndarray
    activity: np.ndarray
    signup_day: np.ndarray  # days after the start's date (negative: signed up before the period)
    active_from: np.ndarray  # seconds after start
    active_until: np.ndarray  # seconds after start: end of period, or churn


def _core(config: ShopConfig, batch: int, n: int) -> _Core:
    rng = _rng(config.seed, batch, _Purpose.CORE)
    segment = rng.choice(len(SEGMENTS), size=n, p=_proto("share")).astype("int8")
    # Lognormal activity: a few customers make a large share of the traffic.
    activity = _proto("activity")[segment] * rng.lognormal(0.0, 0.9, n)
    existing = rng.random(n) < 0.45
    before = -rng.integers(1, 3 * 365, n)
    during = rng.integers(0, max(1, int(0.8 * config.days)), n)
    churn_at = rng.uniform(0.25, 0.85, n)
    signup_day = np.where(existing, before, during)
    _, start_second = _start(config)
    active_from = np.maximum(0.0, signup_day * _DAY - start_second)
    period = config.days * _DAY
    churned = segment == CHURNER
    active_until = np.where(churned, np.floor(active_from + (period - active_from) * churn_at), period)
    return _Core(segment, activity, signup_day, active_from, active_until)


def _all_cores(config: ShopConfig) -> list[_Core]:
    return [_core(config, b, hi - lo) for b, (lo, hi) in enumerate(config.batches)]


def _allocation(config: ShopConfig, cores: list[_Core]) -> np.ndarray:
    """Events per customer: multinomial over activity × active days, summing to config.events."""
    weight = np.concatenate([c.activity * (c.active_until - c.active_from) / _DAY for c in cores])
    return _rng(config.seed, _Purpose.ALLOCATION).multinomial(config.events, weight / weight.sum())


@dataclass(frozen=True)
class _Preferences:
    category_weights: np.ndarray  # (n, categories)
    category_cum: np.ndarray
    favourite: np.ndarray
    price_sensitivity: np.ndarray
    view_to_cart: np.ndarray
    cart_to_purchase: np.ndarray
    cart_to_remove: np.ndarray
    refund: np.ndarray
    rating: np.ndarray
    share_item: np.ndarray
    search: np.ndarray
    journeys_per_session: np.ndarray
    peak_hour: np.ndarray
    devices: np.ndarray  # (n, 3) mix
    channels: np.ndarray  # (n, 3) mix

    @property
    def expected_events_per_journey(self) -> np.ndarray:
        opens = 1.0 / self.journeys_per_session
        buy = self.cart_to_purchase * (1.0 - 0.5 * self.price_sensitivity * 0.5)
        after_buy = 1.0 + self.refund + (1.0 - self.refund) * self.rating
        cart = 1.0 + buy * after_buy + (1.0 - buy) * self.cart_to_remove
        search = self.search * (opens + 0.15 * (1.0 - opens))
        return 1.0 + search + self.share_item + self.view_to_cart * cart


def _preferences(config: ShopConfig, batch: int, segment: np.ndarray, catalogue: _Catalogue) -> _Preferences:
    rng = _rng(config.seed, batch, _Purpose.PREFERENCES)
    n, n_cat = len(segment), config.categories
    rows = np.arange(n)
    # Dirichlet around a favourite and two secondary categories (drawn as normalised gammas).
    favourite_draw = rng.choice(n_cat, size=n, p=catalogue.category_popularity)
    secondary = rng.choice(n_cat, size=(n, 2), p=catalogue.category_popularity)
    alpha = np.repeat(_proto("spread")[segment][:, None], n_cat, axis=1)
    alpha[rows, favourite_draw] += _proto("focus")[segment]
    np.add.at(alpha, (np.repeat(rows, 2), secondary.ravel()), 1.5)
    weights = rng.gamma(alpha)
    weights /= weights.sum(axis=1, keepdims=True)

    concentration = 12.0
    mean_sensitivity = _proto("price_sensitivity")[segment]
    sensitivity = rng.beta(mean_sensitivity * concentration, (1 - mean_sensitivity) * concentration)

    def jitter(p) -> np.ndarray:
        return _expit(_logit(np.asarray(p, dtype="float64")) + rng.normal(0.0, 0.3, n))

    def mix(name: str) -> np.ndarray:
        g = rng.gamma(np.array([getattr(p, name) for p in _PROTOTYPES])[segment] * 30.0)
        return g / g.sum(axis=1, keepdims=True)

    return _Preferences(
        category_weights=weights,
        category_cum=np.cumsum(weights, axis=1),
        favourite=weights.argmax(axis=1),
        price_sensitivity=sensitivity,
        view_to_cart=jitter(_proto("view_to_cart")[segment]),
        cart_to_purchase=jitter(_proto("cart_to_purchase")[segment]),
        cart_to_remove=jitter(np.full(n, 0.35)),
        refund=jitter(_proto("refund")[segment]),
        rating=jitter(_proto("rating")[segment]),
        share_item=jitter(_proto("share_item")[segment]),
        search=jitter(_proto("search")[segment]),
        journeys_per_session=_proto("journeys_per_session")[segment] * rng.lognormal(0.0, 0.25, n),
        peak_hour=(_proto("peak_hour")[segment] + rng.normal(0.0, 1.5, n)) % 24.0,
        devices=mix("devices"),
        channels=mix("channels"),
    )


def generate_customers(config: ShopConfig) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Per batch: (customers, truth). Truth holds segment, churned_at and the latent parameters."""
    catalogue = _catalogue(config)
    cores = _all_cores(config)
    budget = _allocation(config, cores)
    start_date = pd.Timestamp(config.start).tz_convert("UTC").date()
    start_us, _ = _start(config)
    for batch, (lo, hi) in enumerate(config.batches):
        core = cores[batch]
        prefs = _preferences(config, batch, core.segment, catalogue)
        ids = _external_ids(config, lo, hi)
        customers = _profiles(config, batch, lo, core, ids, start_date)

        churned = core.segment == CHURNER
        churn_us = np.where(churned, start_us + core.active_until.astype("int64") * 1_000_000, 0)
        churned_at = _utc(churn_us)
        churned_at[~churned] = pd.NaT
        truth = pd.DataFrame({
            "external_id": _str(ids),
            "segment": _str(np.array(SEGMENTS, dtype=object)[core.segment]),
            "churned_at": churned_at,
            "parameters": _parameters(prefs, core, budget[lo:hi], catalogue.category_names),
        })
        yield customers, truth


def _profiles(config: ShopConfig, batch: int, lo: int, core: _Core, ids: pa.Array, start_date) -> pd.DataFrame:
    rng = _rng(config.seed, batch, _Purpose.PROFILE)
    n = len(ids)
    gender = rng.choice(3, size=n, p=[0.49, 0.48, 0.03])
    first_pick, last_pick = rng.random(n), rng.integers(0, len(_LAST_NAMES), n)
    domain = rng.integers(0, len(_EMAIL_DOMAINS), n)
    area, line = rng.integers(0, len(_AREA_CODES), n), rng.integers(0, 10_000, n)
    age = np.clip(np.rint(_proto("age")[core.segment] + rng.normal(0.0, 10.0, n)), 18, 85).astype("int64")
    loyalty = rng.random(n) < _proto("loyalty")[core.segment]
    consent_profiling = rng.random(n) < 0.97
    consent_marketing = rng.random(n) < np.where(loyalty, 0.8, 0.5)
    region = rng.choice(len(REGIONS), size=n, p=[0.18, 0.21, 0.30, 0.12, 0.07, 0.12])

    names, emails, phones = [], [], []
    for i in range(n):
        pool = _FIRST_NAMES[GENDERS[gender[i]]]
        first, last = pool[int(first_pick[i] * len(pool))], _LAST_NAMES[last_pick[i]]
        names.append(f"{first} {last}")
        local = f"{first}.{last}".lower().replace("ü", "ue")
        emails.append(f"{local}.{lo + i + 1}@{_EMAIL_DOMAINS[domain[i]]}")
        phones.append(f"+1-{_AREA_CODES[area[i]]}-555-{line[i]:04d}")
    signup = np.datetime64(start_date, "D") + core.signup_day.astype("timedelta64[D]")
    return pd.DataFrame({
        "external_id": _str(ids),
        "email": _str(emails),
        "name": _str(names),
        "phone": _str(phones),
        "age": age,
        "gender": _str(np.array(GENDERS, dtype=object)[gender]),
        "region": _str(np.array(REGIONS, dtype=object)[region]),
        "signup_date": pd.Series(signup).dt.date.to_numpy(dtype=object),
        "is_loyalty_member": loyalty,
        "consent_profiling": consent_profiling,
        "consent_marketing": consent_marketing,
    })


def _parameters(prefs: _Preferences, core: _Core, budget: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Each customer's latent parameters as a JSON-safe dict: the truth's `parameters` column."""

    def rounded(values, digits=4) -> list:
        return np.round(values, digits).tolist()

    scalars = {
        "price_sensitivity": rounded(prefs.price_sensitivity),
        # relative intensity: events are allotted in proportion to activity × active days
        "activity_rate": rounded(core.activity),
        "events": budget.tolist(),
        "peak_hour": rounded(prefs.peak_hour, 2),  # UTC
        "refund_rate": rounded(prefs.refund),
        "rating_rate": rounded(prefs.rating),
        "share_rate": rounded(prefs.share_item),
        "search_rate": rounded(prefs.search),
        "journeys_per_session": rounded(prefs.journeys_per_session, 2),
    }
    funnel_steps = ("view_to_cart", "cart_to_purchase", "cart_to_remove")
    funnel = rounded(np.column_stack([prefs.view_to_cart, prefs.cart_to_purchase, prefs.cart_to_remove]))
    rows = zip(
        prefs.favourite.tolist(), rounded(prefs.category_weights), funnel, rounded(prefs.devices),
        rounded(prefs.channels), *scalars.values(), strict=True,
    )
    out = np.empty(len(budget), dtype=object)
    for i, (favourite, weights, steps, devices, channels, *values) in enumerate(rows):
        out[i] = {
            "favourite_category": names[favourite],
            "category_weights": dict(zip(names, weights, strict=True)),
            "funnel": dict(zip(funnel_steps, steps, strict=True)),
            "device_mix": dict(zip(DEVICES, devices, strict=True)),
            "channel_mix": dict(zip(CHANNELS, channels, strict=True)),
            **dict(zip(scalars, values, strict=True)),
        }
    return out


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    catalogue: _Catalogue
    core: _Core
    prefs: _Preferences
    customer_ids: pa.Array
    skus: pa.Array  # in catalogue (sorted) order
    start_us: int
    start_second: float


def generate_events(config: ShopConfig) -> Iterator[pd.DataFrame]:
    """Chunks of at most CHUNK_ROWS events with EVENT_COLUMNS; config.events rows in all."""
    catalogue = _catalogue(config)
    skus = pa.array(catalogue.frame["sku"].to_numpy(dtype=object), type=pa.string())
    cores = _all_cores(config)
    budget = _allocation(config, cores)
    start_us, start_second = _start(config)
    for batch, (lo, hi) in enumerate(config.batches):
        core = cores[batch]
        ctx = _Batch(
            catalogue=catalogue, core=core, prefs=_preferences(config, batch, core.segment, catalogue),
            customer_ids=_external_ids(config, lo, hi), skus=skus,
            start_us=start_us, start_second=start_second,
        )
        rng = _rng(config.seed, batch, _Purpose.EVENTS)
        own = budget[lo:hi]
        # Consecutive customers in groups of about _GROUP_EVENTS events.
        group = (np.cumsum(own) - own) // _GROUP_EVENTS
        bounds = np.flatnonzero(np.diff(group)) + 1
        for customers in np.split(np.arange(hi - lo), bounds):
            if own[customers].sum() == 0:
                continue
            yield from _chunks(_group_events(rng, ctx, customers, own[customers]))


def _draw_journeys(rng: np.random.Generator, ctx: _Batch, cust: np.ndarray) -> tuple[np.ndarray, ...]:
    """One journey per entry of `cust`: which template events happen, the item, the quantity."""
    prefs, cat = ctx.prefs, ctx.catalogue
    j = len(cust)
    category = _choose_rows(prefs.category_cum, cust, rng.random(j))
    start, count = cat.category_start[category], cat.category_count[category]
    # Price position from a Beta whose mean falls with price sensitivity; a quarter of views go to
    # the category's bestsellers (Zipf-like over a seeded popularity order) whatever their price.
    mean = np.clip(1.0 - prefs.price_sensitivity[cust], 0.05, 0.95)
    percentile = rng.beta(mean * 5.0, (1.0 - mean) * 5.0)
    by_price = start + np.minimum((percentile * count).astype("int64"), count - 1)
    popular = cat.by_popularity[start + (count * rng.random(j) ** 3).astype("int64")]
    item = np.where(rng.random(j) < 0.25, popular, by_price)

    u = rng.random((j, 8))
    opens_session = u[:, 7] < 1.0 / prefs.journeys_per_session[cust]
    search = u[:, 0] < prefs.search[cust] * np.where(opens_session, 1.0, 0.15)
    share = u[:, 1] < prefs.share_item[cust]
    cart = u[:, 2] < prefs.view_to_cart[cust]
    # Price-sensitive shoppers drop expensive items at checkout.
    deterred = 0.5 * prefs.price_sensitivity[cust] * cat.price_percentile[item]
    purchase = cart & (u[:, 3] < prefs.cart_to_purchase[cust] * (1.0 - deterred))
    remove = cart & ~purchase & (u[:, 4] < prefs.cart_to_remove[cust])
    # Poorly made items come back more often.
    refund_p = prefs.refund[cust] * np.clip(np.exp(4.0 - cat.quality[item]), 0.3, 3.0)
    refund = purchase & (u[:, 5] < refund_p)
    rating = purchase & ~refund & (u[:, 6] < prefs.rating[cust])
    flags = np.column_stack([search, np.ones(j, dtype=bool), share, cart, remove, purchase, rating, refund])
    quantity = np.minimum(rng.geometric(0.75, j), 6)
    return flags, item, quantity, opens_session


def _enough_journeys(rng: np.random.Generator, ctx: _Batch, customers: np.ndarray, budget: np.ndarray):
    """Journeys grouped by owner (index into customers), drawn in rounds until each owner's journeys
    hold at least their budget of events. The first journey of an owner opens a session."""
    per_journey = ctx.prefs.expected_events_per_journey[customers]
    need = budget.astype("int64")
    rounds = []
    while (short := need > 0).any():
        journeys = np.ceil(need[short] / per_journey[short] * 1.1).astype("int64") + 1
        owner = np.repeat(np.flatnonzero(short), journeys)
        drawn = _draw_journeys(rng, ctx, customers[owner])
        need -= np.bincount(owner, weights=drawn[0].sum(axis=1), minlength=len(customers)).astype("int64")
        rounds.append((owner, *drawn))
    owner, flags, item, quantity, opens = (np.concatenate(parts) for parts in zip(*rounds, strict=True))
    order = np.argsort(owner, kind="stable")
    owner, flags, item, quantity, opens = owner[order], flags[order], item[order], quantity[order], opens[order]
    opens[np.r_[True, owner[1:] != owner[:-1]]] = True
    return owner, flags, item, quantity, opens


def _group_events(rng: np.random.Generator, ctx: _Batch, customers: np.ndarray, budget: np.ndarray) -> dict:
    """Events of some customers of a batch: exactly budget[i] for customers[i], sorted per customer."""
    prefs, core, cat = ctx.prefs, ctx.core, ctx.catalogue
    m = len(customers)
    owner, flags, item, quantity, opens = _enough_journeys(rng, ctx, customers, budget)
    session_of_journey = np.cumsum(opens) - 1

    # Journeys → events, cut at each customer's budget (a journey loses its tail, never its head).
    journey, step = np.nonzero(flags)
    who = owner[journey]
    per_customer = np.bincount(who, minlength=m)
    position = np.arange(len(who)) - (np.cumsum(per_customer) - per_customer)[who]
    keep = position < budget[who]
    journey, step, who = journey[keep], step[keep], who[keep]
    n = len(journey)
    session = session_of_journey[journey]
    session = np.cumsum(np.r_[True, session[1:] != session[:-1]]) - 1
    n_sessions = int(session[-1]) + 1 if n else 0

    # Clock inside a session: seconds-to-minutes gaps from the previous event.
    delayed = step >= _T_RATING
    live = np.flatnonzero(~delayed)
    live_session = session[live]
    gap = 6.0 + _GAP_MEDIAN_S[step[live]] * rng.lognormal(0.0, 0.7, len(live))
    gap = np.minimum(gap, 1800.0)
    opens_here = np.r_[True, live_session[1:] != live_session[:-1]]
    gap[opens_here] = 0.0
    elapsed = np.cumsum(gap)
    first = np.flatnonzero(opens_here)
    offset = elapsed - elapsed[first][live_session]
    last = np.r_[first[1:], len(live)] - 1
    duration = offset[last]

    start = _session_starts(rng, ctx, customers[who[live[first]]], duration)
    seconds = np.empty(n)
    seconds[live] = start[live_session] + offset
    # Rating and refund arrive days after delivery; each directly follows its purchase.
    late = np.flatnonzero(delayed)
    bought_at = seconds[late - 1]
    rating_wait = 1.0 + rng.exponential(4.0, len(late))
    refund_wait = 2.0 + rng.exponential(6.0, len(late))
    wait = _DAY * np.where(step[late] == _T_RATING, rating_wait, refund_wait)
    room = core.active_until[customers[who[late]]] - bought_at
    seconds[late] = bought_at + np.where(wait < room, wait, room * rng.uniform(0.3, 0.95, len(late)))

    # A rating or refund is a visit of its own, days after the purchase.
    session[late] = n_sessions + np.arange(len(late))
    session_customer = customers[np.r_[who[live[first]], who[late]]]
    n_sessions += len(late)

    # Per-session channel and device.
    channel = _choose_rows(np.cumsum(prefs.channels, axis=1), session_customer, rng.random(n_sessions))
    device = _choose_rows(np.cumsum(prefs.devices, axis=1), session_customer, rng.random(n_sessions))
    no_app_on_desktop = (channel == CHANNELS.index("app")) & (device == DEVICES.index("desktop"))
    device = np.where(no_app_on_desktop, DEVICES.index("mobile"), device)
    session_ids = _hex_ids(rng, n_sessions, "S-")

    is_order_line = step == _T_PURCHASE
    order = np.cumsum(is_order_line) - 1
    refunds = np.flatnonzero(step == _T_REFUND)
    order[refunds] = order[refunds - 1]
    has_order = is_order_line | (step == _T_REFUND)
    order_ids = _hex_ids(rng, int(is_order_line.sum()), "O-")

    event_item = item[journey]
    qty = np.where((step >= _T_CART) & (step != _T_RATING), quantity[journey], 1)
    priced = (step == _T_CART) | (step == _T_REMOVE) | (step == _T_PURCHASE) | (step == _T_REFUND)
    value = np.where(priced, np.round(cat.price[event_item] * qty, 2), np.nan)
    rates = step == _T_RATING
    stars = np.full(n, np.nan)
    felt = cat.quality[event_item[rates]] + rng.normal(0.0, 0.8, int(rates.sum()))
    stars[rates] = np.clip(np.rint(felt), 1, 5)

    searches = np.flatnonzero(step == _T_SEARCH)
    phrases = cat.queries[event_item[searches], rng.integers(0, 3, len(searches))]
    context = np.full(n, None, dtype=object)
    context[searches] = [{"query": q} for q in phrases]

    # Per customer in time order.
    by_time = np.lexsort((seconds, who))
    return {
        "event_id": _uuid4s(rng, n),
        "customer_id": ctx.customer_ids.take(customers[who[by_time]]),
        "item_id": ctx.skus.take(pa.array(event_item[by_time], mask=(step == _T_SEARCH)[by_time])),
        "event_type": pa.array(EVENT_TYPES).take(_TEMPLATE_TYPE[step[by_time]]),
        "timestamp": ctx.start_us + np.rint(seconds[by_time] * 1e6).astype("int64"),
        "quantity": qty[by_time].astype("int64"),
        "value": value[by_time],
        "currency": pa.array([CURRENCY]).take(np.zeros(n, dtype="int64")),
        "rating": stars[by_time],
        "session_id": session_ids.take(session[by_time]),
        "channel": pa.array(CHANNELS).take(channel[session[by_time]]),
        "device": pa.array(DEVICES).take(device[session[by_time]]),
        "order_id": pa.concat_arrays([order_ids, pa.array([""])]).take(
            np.where(has_order, order, len(order_ids))[by_time]),
        "context": context[by_time],
    }


def _session_starts(rng: np.random.Generator, ctx: _Batch, owner: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Start (seconds after period start) of each session; sessions arrive grouped by owner.

    Days are uniform over the owner's active window (front-loaded for churners, whose activity fades),
    hours cluster around the owner's peak hour; sessions of one owner never overlap and end inside
    the window.
    """
    core, prefs = ctx.core, ctx.prefs
    s = len(owner)
    lo, hi_window = core.active_from[owner], core.active_until[owner]
    margin = np.minimum(3600.0, 0.05 * (hi_window - lo))
    hi = np.maximum(lo, hi_window - margin - duration)
    u = rng.random(s)
    u = np.where(core.segment[owner] == CHURNER, 1.0 - (1.0 - u) ** (1.0 / 1.8), u)
    t = lo + u * (hi - lo)
    near_peak = prefs.peak_hour[owner] + rng.normal(0.0, 2.0, s)
    hour = np.where(rng.random(s) < 0.7, near_peak, rng.uniform(0.0, 24.0, s)) % 24.0
    midnight = np.floor((t + ctx.start_second) / _DAY) * _DAY - ctx.start_second
    at_hour = midnight + hour * 3600.0
    t = np.where((at_hour >= lo) & (at_hour <= hi), at_hour, t)
    t = t[np.lexsort((t, owner))]

    # Push a session that would overlap the previous one to start after it plus a break:
    # start_k = C_k + max_{j<=k}(t_j − C_j), with C the owner's cumulative (duration + break).
    span = duration + _SESSION_BREAK_S
    first = np.r_[True, owner[1:] != owner[:-1]]
    before = np.cumsum(span) - span
    group_first = np.maximum.accumulate(np.where(first, np.arange(s), 0))
    cumulative = before - before[group_first]
    start = cumulative + pd.Series(t - cumulative).groupby(np.cumsum(first)).cummax().to_numpy()

    # The rare owner pushed past the window is squeezed back into it.
    last = np.r_[np.flatnonzero(first)[1:], s] - 1
    limit = (hi_window - margin - duration)[last]
    over = start[last] > limit
    if over.any():
        group = np.cumsum(first) - 1
        base = lo[last]
        factor = np.ones(len(last))
        factor[over] = (limit[over] - base[over]) / np.maximum(start[last][over] - base[over], 1e-9)
        start = base[group] + (start - base[group]) * np.clip(factor[group], 0.0, 1.0)
    return start


def _chunks(columns: dict) -> Iterator[pd.DataFrame]:
    n = len(columns["event_id"])
    for lo in range(0, n, CHUNK_ROWS):
        part = {name: values[lo: lo + CHUNK_ROWS] for name, values in columns.items()}
        yield pd.DataFrame({
            "event_id": _str(part["event_id"]),
            "customer_id": _str(part["customer_id"]),
            "item_id": _str(part["item_id"]),
            "event_type": _str(part["event_type"]),
            "timestamp": _utc(part["timestamp"]),
            "quantity": part["quantity"],
            "value": part["value"],
            "currency": _str(part["currency"]),
            "rating": part["rating"],
            "session_id": _str(part["session_id"]),
            "channel": _str(part["channel"]),
            "device": _str(part["device"]),
            "order_id": _str(part["order_id"]),
            "context": part["context"],
        }, copy=False)


# --- social graph ----------------------------------------------------------------------------------


def generate_social_edges(config: ShopConfig) -> pd.DataFrame:
    """Directed edges between customers (follow, referral, share); most within one latent segment."""
    rng = _rng(config.seed, _Purpose.EDGES)
    cores = _all_cores(config)
    segment = np.concatenate([c.segment for c in cores])
    activity = np.concatenate([c.activity for c in cores])
    active_from = np.concatenate([c.active_from for c in cores])
    active_until = np.concatenate([c.active_until for c in cores])
    n = config.customers

    # Out-degree follows activity; targets are drawn in proportion to activity (popular people get
    # followed), from the source's own segment with probability 0.8, else from anyone.
    degree = rng.poisson(1.5 * np.sqrt(activity))
    source = np.repeat(np.arange(n), degree)
    e = len(source)
    by_segment = np.argsort(segment, kind="stable")
    cum = np.cumsum(activity[by_segment])
    seg_count = np.bincount(segment, minlength=len(SEGMENTS))
    seg_end = np.cumsum(seg_count)
    seg_lo = np.r_[0.0, cum][seg_end - seg_count]
    seg_hi = cum[np.maximum(seg_end - 1, 0)]
    own = segment[source]
    u = rng.random(e)
    inside = rng.random(e) < 0.8
    point = np.where(inside, seg_lo[own] + u * (seg_hi[own] - seg_lo[own]), u * cum[-1])
    target = by_segment[np.minimum(np.searchsorted(cum, point, side="right"), n - 1)]
    relation = rng.choice(len(RELATIONS), size=e, p=[0.6, 0.15, 0.25])

    # Both must be active at the time of the edge; referrals happen when the later one joins.
    lo = np.maximum(active_from[source], active_from[target])
    hi = np.minimum(active_until[source], active_until[target])
    at = np.where(relation == RELATIONS.index("referral"), lo + np.minimum(_DAY, hi - lo) * rng.random(e),
                  lo + (hi - lo) * rng.random(e))
    key = (source.astype("int64") * n + target) * len(RELATIONS) + relation
    _, first_seen = np.unique(key, return_index=True)
    valid = np.zeros(e, dtype=bool)
    valid[first_seen] = True
    valid &= (source != target) & (hi > lo)
    source, target, relation, at = source[valid], target[valid], relation[valid], at[valid]

    start_us, _ = _start(config)
    ids = _external_ids(config, 0, n)
    return pd.DataFrame({
        "source_id": _str(ids.take(source)),
        "target_id": _str(ids.take(target)),
        "relation": _str(pa.array(RELATIONS).take(relation)),
        "occurred_at": _utc(start_us + np.rint(at * 1e6).astype("int64")),
    })
