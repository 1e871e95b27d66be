"""A synthetic preference set with a controllable length bias, to measure length balancing.

Each pair answers a "name a kind of thing" question. The **chosen** response names something of
the asked kind ("Name a fruit." -> "A banana."), the **rejected** one something of another kind
("A hammer."): the real signal is relevance, which a small reward model can learn. Filler
sentences ("I hope this helps.") are appended to one side, so the lengths differ by 1-4 sentences:
with probability ``bias`` the chosen side gets the filler (longer wins), otherwise the rejected
side does. ``bias=0.8`` gives a training set where length predicts the label 80 % of the time;
``bias=0.5`` gives a held-out set where it predicts nothing, so held-out accuracy measures
relevance and the reward-length correlation measures what the model learned about length.
"""

from __future__ import annotations

import random
from typing import Any

KINDS: dict[str, tuple[str, ...]] = {
    "fruit": ("an apple", "a banana", "a cherry", "a mango", "a pear", "a plum", "a peach", "a lemon",
              "an orange", "a grape", "a kiwi", "a melon"),
    "animal": ("a dog", "a cat", "a horse", "a rabbit", "a lion", "a tiger", "a cow", "a sheep", "a goat",
               "an elephant", "a zebra", "a fox"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "black", "white",
               "grey", "violet"),
    "tool": ("a hammer", "a saw", "a wrench", "a screwdriver", "a drill", "a chisel", "a shovel", "a rake",
             "pliers", "a spanner", "an axe", "a file"),
    "vehicle": ("a car", "a bus", "a train", "a bicycle", "a truck", "a boat", "a plane", "a tram",
                "a scooter", "a van", "a ship", "a taxi"),
    "drink": ("water", "tea", "coffee", "milk", "juice", "lemonade", "cocoa", "soda", "cider", "smoothie",
              "broth", "punch"),
}
QUESTIONS = ("Name a {k}.", "Give me an example of a {k}.", "Can you name one {k}?", "Tell me a {k}, please.")
ANSWERS = ("{x}.", "How about {x}?", "One example is {x}.", "{x}, for instance.")
FILLER = ("I hope this helps.", "Let me know if you need anything else.", "That is a good question.",
          "There are many possible answers.", "Thank you for asking.", "I am happy to help with that.")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def length_biased_pairs(n: int, bias: float, seed: int = 0, max_filler: int = 4) -> list[dict[str, Any]]:
    """``n`` conversational preference rows; ``bias`` = probability that the chosen side is longer.

    Each row also carries ``longer_wins`` (bool) and ``filler`` (sentences added) as metadata.
    """
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0, 1], got {bias}")
    if max_filler < 1:
        raise ValueError(f"max_filler must be >= 1, got {max_filler}")
    rng = random.Random(f"length-bias:{seed}")
    kinds = sorted(KINDS)
    rows = []
    for _ in range(n):
        kind, other = rng.sample(kinds, 2)
        question = rng.choice(QUESTIONS).format(k=kind)
        # One answer template per pair, so the filler (>= 21 characters) always decides which side
        # is longer (item names differ by at most 10 characters).
        template = rng.choice(ANSWERS)
        good = _cap(template.format(x=rng.choice(KINDS[kind])))
        bad = _cap(template.format(x=rng.choice(KINDS[other])))
        k = rng.randint(1, max_filler)
        filler = " " + " ".join(rng.sample(FILLER, k))
        longer_wins = rng.random() < bias
        if longer_wins:
            good += filler
        else:
            bad += filler
        rows.append({"prompt": [{"role": "user", "content": question}],
                     "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}],
                     "longer_wins": longer_wins, "filler": k})
    return rows
