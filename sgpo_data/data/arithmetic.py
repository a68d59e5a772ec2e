"""Embedded prompts: seeded multi-step grade-school arithmetic word problems, written here (no downloads).

Each problem follows one person and one kind of item through a chain of operations (add, subtract,
multiply, divide). The reference solution has one paragraph per operation, each showing its arithmetic
as `a op b = c` with `+ - × ÷`, then "The answer is N." -- the paragraph steps the judge and RTS use.
Every intermediate and final value is a positive integer below 1000: subtraction never empties the
pile, division happens only when it is exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sgpo_data.errors import SgpoError

MAX_VALUE = 999

_PEOPLE = [  # (name, subject pronoun, object pronoun, possessive)
    *[(n, "she", "her", "her") for n in ("Maya", "Aisha", "Lena", "Sofia", "Priya", "Emma", "Yuki", "Zara")],
    *[(n, "he", "him", "his") for n in ("Leo", "Omar", "Ben", "Mateo", "Ravi", "Noah", "Kenji", "Sam")],
]
_ITEMS = [  # (plural, singular, container, edible)
    ("apples", "apple", "bag", True),
    ("cookies", "cookie", "box", True),
    ("strawberries", "strawberry", "basket", True),
    ("marbles", "marble", "jar", False),
    ("stickers", "sticker", "sheet", False),
    ("pencils", "pencil", "pack", False),
    ("seashells", "seashell", "bucket", False),
    ("stamps", "stamp", "album page", False),
]
_THEN = ["Then", "Next", "After that", "Later"]


@dataclass
class _Story:
    name: str
    she: str
    her_obj: str
    her: str
    plural: str
    singular: str
    container: str
    edible: bool
    value: int

    def n(self, k: int) -> str:
        return f"{k} {self.singular if k == 1 else self.plural}"


@dataclass
class _Step:
    story: str  # sentence for the problem text, without the leading subject
    clause: str  # what the person does, for the solution paragraph
    expr: str  # left side of the equation, e.g. "12 + 3 × 5"
    value: int


def _buy(rng, s, friend):
    k = rng.randint(1, 15)
    verb = rng.choice(["buys", "finds", "picks up"] if s.edible else ["buys", "finds", "wins"])
    return _Step(f"{verb} {s.n(k)}", f"{verb} {k}", f"{s.value} + {k}", s.value + k)


def _receive(rng, s, friend):
    k = rng.randint(2, 12)
    return _Step(f"receives {s.n(k)} from {friend}", f"receives {k} from {friend}", f"{s.value} + {k}", s.value + k)


def _buy_boxes(rng, s, friend):
    boxes, each = rng.randint(2, 5), rng.randint(2, 10)
    story = f"buys {boxes} {s.container}s, and each of the {boxes} {s.container}s holds {s.n(each)}"
    return _Step(story, f"buys {boxes} {s.container}s of {each}", f"{s.value} + {boxes} × {each}", s.value + boxes * each)


def _take_away(rng, s, friend):
    if s.value < 2:
        return None
    k = rng.randint(1, min(s.value - 1, 20))
    verbs = [f"gives {{}} to {friend}", "sells {}"] + (["eats {}"] if s.edible else ["loses {}"])
    verb = rng.choice(verbs)
    return _Step(verb.format(s.n(k)), verb.format(k), f"{s.value} - {k}", s.value - k)


def _multiply(rng, s, friend):
    factor = rng.choice([2, 2, 3])
    if s.value * factor > MAX_VALUE or s.value > 60:
        return None
    verb = {2: "doubles", 3: "triples"}[factor]
    story = f"trades with {friend} and {verb} {s.her} {s.plural}"
    return _Step(story, f"trades and {verb} {s.her} {s.plural}", f"{s.value} × {factor}", s.value * factor)


def _share(rng, s, friend):
    sizes = [k for k in range(2, 7) if s.value % k == 0]
    if not sizes or s.value < 4:
        return None
    k = rng.choice(sizes)
    others = f"{k - 1} friend" + ("s" if k > 2 else "")
    text = f"shares {s.her} {s.plural} equally among {s.her_obj}self and {others}, keeping one share"
    return _Step(text, text, f"{s.value} ÷ {k}", s.value // k)


_OPS = [_buy, _receive, _buy_boxes, _take_away, _take_away, _multiply, _share]


def _problem(rng: random.Random, n_steps: int) -> tuple[str, str, int]:
    name, she, her_obj, her = rng.choice(_PEOPLE)
    friend = rng.choice([p[0] for p in _PEOPLE if p[0] != name])
    s = _Story(name, she, her_obj, her, *rng.choice(_ITEMS), value=rng.randint(3, 30))
    story = [f"{name} has {s.n(s.value)}."]
    paragraphs = []
    question = f"How many {s.plural} does {name} have {rng.choice(['now', 'in the end', 'at the end'])}?"
    for i in range(n_steps):
        then = rng.choice(_THEN)
        lead = f"{then}, {she}" if i else f"{name} starts with {s.value} {s.plural} and"
        splits = [k for k in range(2, 6) if s.value % k == 0 and s.value >= 4]
        if i == n_steps - 1 and splits and rng.random() < 0.25:  # an exact final split asks for one share
            k, lead = rng.choice(splits), (f"Finally, {she}" if i else lead)
            story.append(f"{'Finally, ' + she if i else she.capitalize()} shares all {her} {s.plural} equally among {k} friends.")
            question = f"How many {s.plural} does each friend get?"
            paragraphs.append(f"{lead} shares them equally among {k} friends, so each friend gets {s.value} ÷ {k} = {s.n(s.value // k)}.")
            s.value //= k
            break
        step = None
        while step is None or step.value > MAX_VALUE:  # redraw ops that do not apply to the current value
            step = rng.choice(_OPS)(rng, s, friend)
        story.append(f"{then}, {she} {step.story}." if i else f"{she.capitalize()} {step.story}.")
        paragraphs.append(f"{lead} {step.clause}, so {she} has {step.expr} = {s.n(step.value)}.")
        s.value = step.value
    paragraphs.append(f"The answer is {s.value}.")
    return " ".join(story + [question]), "\n\n".join(paragraphs), s.value


def generate_arithmetic(num_problems: int, min_steps: int, max_steps: int, seed: int) -> list[dict]:
    """`num_problems` prompt rows (PROMPT_SCHEMA keys); the same arguments always give the same rows."""
    if num_problems < 1:
        raise SgpoError(f"arithmetic: num_problems must be at least 1 (got {num_problems}); set data.arithmetic.num_problems")
    if min_steps < 1 or max_steps < min_steps:
        raise SgpoError(
            f"arithmetic: need 1 <= min_steps <= max_steps (got min_steps={min_steps}, max_steps={max_steps}); "
            "set data.arithmetic.min_steps / max_steps"
        )
    rng = random.Random(seed)
    rows = []
    for i in range(num_problems):
        problem, solution, answer = _problem(rng, rng.randint(min_steps, max_steps))
        rows.append(
            {
                "prompt_id": f"arith-{seed}-{i:05d}",
                "problem": problem,
                "reference_solution": solution,
                "reference_answer": str(answer),
                "data_source": "arithmetic",
            }
        )
    return rows
