"""Generate the demo corpus and multi-hop question set (an invented, self-consistent small world).

The world is the country of Calvessa: provinces, towns on rivers, rivers that rise on mountains and
empty into seas and lakes, people born in towns who taught each other, founded institutions, created
works, designed bridges and climbed mountains. Every fact lives in one table below; passages and
questions are both rendered from it, so every golden answer is checked by construction.

    python environments/qa/data/make_demo.py [OUT_DIR]

writes ``demo_corpus.jsonl`` ({"id","title","text"}) and ``demo_questions.jsonl``
({"id","question","golden_answers","metadata"}) to OUT_DIR (default: this folder). Output is a pure
function of the seed.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20260601

ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "st", "t"]
ONSETS += ["th", "v", "w", "z", "sk", "tr", "qu"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ie", "ou", "y", "ae", "io"]
CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "ll", "st", "x", "v", "sh", "rn"]
TOWN_SUFFIXES = ["wick", "stead", "holm", "ford", "mere", "by", "haven", "ton", "dale", "garth", "moor"]
PROFESSIONS = {
    "astronomer": ("star catalogue", "catalogued"),
    "cartographer": ("atlas", "drew"),
    "poet": ("collection of poems", "wrote"),
    "painter": ("painting", "painted"),
    "botanist": ("herbal", "compiled"),
    "composer": ("symphony", "composed"),
    "historian": ("chronicle", "wrote"),
    "mathematician": ("treatise", "wrote"),
    "engineer": ("design for a tide mill", "drew up"),
    "architect": ("book of drawings", "published"),
    "mountaineer": ("climbing memoir", "wrote"),
    "physician": ("medical handbook", "wrote"),
}
INSTITUTION_KINDS = ["Observatory", "Library", "University", "Museum", "Conservatory", "Academy"]
INSTITUTION_KINDS += ["Botanical Garden", "Hospital", "Map Archive"]
TITLE_WORDS_A = ["Lanterns", "Tides", "Orchards", "Bells", "Winters", "Harbours", "Ledgers", "Salt"]
TITLE_WORDS_A += ["Ferns", "Embers", "Gulls", "Quarries", "Looms", "Shadows", "Meadows", "Compasses"]
TITLE_WORDS_B = ["the North", "the Estuary", "Grey Hills", "the Lower Valley", "Long Evenings", "the Fens"]
TITLE_WORDS_B += ["the Coast Road", "Seven Bridges", "the High Moor", "Still Water", "the Old Quarter"]


@dataclass
class Water:
    name: str
    kind: str  # sea, lake or bay


@dataclass
class Province:
    name: str
    capital: Town | None = None
    towns: list[Town] = field(default_factory=list)
    mountains: list[Mountain] = field(default_factory=list)


@dataclass
class Mountain:
    name: str
    province: Province
    height_m: int
    first_climber: Person | None = None
    first_ascent: int = 0


@dataclass
class River:
    name: str
    source: Mountain
    mouth: Water
    length_km: int
    towns: list[Town] = field(default_factory=list)


@dataclass
class Town:
    name: str
    province: Province
    river: River
    founded: int
    population: int


@dataclass
class Person:
    name: str
    pronoun: str
    born: int
    died: int
    birthplace: Town
    profession: str
    mentor: Person | None = None
    students: list[Person] = field(default_factory=list)
    founded: list[Institution] = field(default_factory=list)
    works: list[Work] = field(default_factory=list)
    bridges: list[Bridge] = field(default_factory=list)
    climbed: list[Mountain] = field(default_factory=list)


@dataclass
class Institution:
    name: str
    kind: str
    town: Town
    founded: int
    founder: Person


@dataclass
class Work:
    title: str
    kind: str
    creator: Person
    year: int


@dataclass
class Bridge:
    name: str
    town: Town
    designer: Person
    year: int
    length_m: int


class Names:
    """Invented words, each used once."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables)]
            parts[-1] += self.rng.choice(CODAS)
            w = "".join(parts).capitalize()
            if w not in self.used and 4 <= len(w) <= 11:
                self.used.add(w)
                return w


@dataclass
class World:
    provinces: list[Province]
    waters: list[Water]
    mountains: list[Mountain]
    rivers: list[River]
    towns: list[Town]
    people: list[Person]
    institutions: list[Institution]
    works: list[Work]
    bridges: list[Bridge]


def build_world(rng: random.Random) -> World:
    names = Names(rng)
    provinces = [Province(names.word(2)) for _ in range(6)]
    waters = [Water(f"the {names.word(2)} Sea", "sea") for _ in range(2)]
    waters += [Water(f"Lake {names.word(2)}", "lake") for _ in range(2)]
    waters.append(Water(f"{names.word(2)} Bay", "bay"))
    mountains = []
    for i in range(12):
        province = provinces[i % len(provinces)]
        m = Mountain(f"Mount {names.word(2)}", province, rng.randrange(1200, 4400))
        province.mountains.append(m)
        mountains.append(m)
    rivers = [
        River(names.word(rng.choice([1, 2])), mountains[i], rng.choice(waters), rng.randrange(40, 900))
        for i in range(12)
    ]
    towns = []
    for _ in range(45):
        province = rng.choice(provinces)
        candidates = [r for r in rivers if r.source.province is province] or rivers
        river = rng.choice(candidates)
        town = Town(
            names.word(rng.choice([1, 2])) + rng.choice(TOWN_SUFFIXES),
            province,
            river,
            rng.randrange(900, 1650),
            rng.randrange(40, 900) * 100,
        )
        names.used.add(town.name)
        province.towns.append(town)
        river.towns.append(town)
        towns.append(town)
    for province in provinces:
        if not province.towns:  # give every province a town
            town = rng.choice([t for t in towns if len(t.province.towns) > 1])
            town.province.towns.remove(town)
            town.province = province
            province.towns.append(town)
    for province in provinces:
        province.capital = max(province.towns, key=lambda t: t.population)

    people = []
    professions = list(PROFESSIONS)
    for i in range(110):
        born = rng.randrange(1700, 1890)
        person = Person(
            f"{names.word(2)} {names.word(rng.choice([2, 3]))}",
            rng.choice(["she", "he"]),
            born,
            born + rng.randrange(45, 92),
            rng.choice(towns),
            professions[i % len(professions)],
        )
        people.append(person)
    for person in people:
        elders = [
            p
            for p in people
            if p.profession == person.profession and 18 <= person.born - p.born <= 45 and p is not person
        ]
        if elders and rng.random() < 0.85:
            person.mentor = rng.choice(elders)
            person.mentor.students.append(person)

    institutions = []
    taken: set[str] = set()
    for _ in range(35):
        founder = rng.choice([p for p in people if len(p.founded) < 2])
        kind = rng.choice(INSTITUTION_KINDS)
        town = founder.birthplace if rng.random() < 0.3 else rng.choice(towns)
        name = f"{town.name} {kind}"
        if name in taken:
            continue
        taken.add(name)
        inst = Institution(name, kind, town, founder.born + rng.randrange(25, 44), founder)
        founder.founded.append(inst)
        institutions.append(inst)

    works: list[Work] = []
    titles: set[str] = set()
    while len(works) < 60:
        creator = rng.choice(people)
        title = f"{rng.choice(TITLE_WORDS_A)} of {rng.choice(TITLE_WORDS_B)}"
        if title in titles or len(creator.works) >= 2:
            continue
        titles.add(title)
        work = Work(title, PROFESSIONS[creator.profession][0], creator, creator.born + rng.randrange(22, 44))
        creator.works.append(work)
        works.append(work)

    bridges = []
    builders = [p for p in people if p.profession in ("engineer", "architect")]
    for _ in range(15):
        designer = rng.choice(builders)
        town = rng.choice(towns)
        bridge = Bridge(
            f"the {names.word(2)} Bridge",
            town,
            designer,
            designer.born + rng.randrange(26, 50),
            30 + rng.randrange(300),
        )
        designer.bridges.append(bridge)
        bridges.append(bridge)

    climbers = [p for p in people if p.profession == "mountaineer"]
    for m in mountains:
        m.first_climber = rng.choice(climbers)
        m.first_ascent = m.first_climber.born + rng.randrange(19, 40)
        m.first_climber.climbed.append(m)
    return World(provinces, waters, mountains, rivers, towns, people, institutions, works, bridges)


# --------------------------------------------------------------------------------------------------
# Passages
# --------------------------------------------------------------------------------------------------


def _list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _bare(name: str) -> str:
    return name.removeprefix("the ")


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def province_text(p: Province) -> str:
    assert p.capital is not None
    highest = max(p.mountains, key=lambda m: m.height_m)
    others = sorted(t.name for t in p.towns if t is not p.capital)
    text = (
        f"{p.name} is one of the six provinces of Calvessa. "
        f"Its capital and largest town is {p.capital.name}. "
        f"The highest point of the province is {highest.name}, at {highest.height_m:,} metres."
    )
    if others:
        text += f" Other towns of {p.name} include {_list(others[:5])}."
    return text


def water_text(w: Water, rivers: list[River]) -> str:
    feeders = sorted(r.name for r in rivers if r.mouth is w)
    kind = {"sea": "a sea", "lake": "a freshwater lake", "bay": "a wide bay"}[w.kind]
    text = f"{_cap(w.name)} is {kind} bordering Calvessa."
    if len(feeders) == 1:
        text += f" The River {feeders[0]} empties into it."
    elif feeders:
        text += f" The rivers {_list(feeders)} empty into it."
    return text


def mountain_text(m: Mountain) -> str:
    assert m.first_climber is not None
    return (
        f"{m.name} is a mountain in the province of {m.province.name}, rising to {m.height_m:,} metres. "
        f"Its first recorded ascent was made in {m.first_ascent} by the mountaineer {m.first_climber.name}."
    )


def river_text(r: River, rng: random.Random) -> str:
    towns = [t.name for t in r.towns]
    opening = rng.choice(
        [
            f"The River {r.name} rises on the slopes of {r.source.name} and flows for "
            f"{r.length_km} kilometres before emptying into {r.mouth.name}.",
            f"The {r.name} is a river of Calvessa, {r.length_km} kilometres long. Its source is on "
            f"{r.source.name}, and its mouth is at {r.mouth.name}.",
        ]
    )
    if towns:
        opening += f" Towns on its banks include {_list(towns[:6])}."
    return opening


def town_text(t: Town, world: World, rng: random.Random) -> str:
    text = rng.choice(
        [
            f"{t.name} is a town in the province of {t.province.name}, Calvessa, "
            f"on the River {t.river.name}. It was first chartered in {t.founded} "
            f"and has about {t.population:,} inhabitants.",
            f"{t.name} lies on the {t.river.name} in {t.province.name}. The town received its charter in "
            f"{t.founded}; its population is roughly {t.population:,}.",
        ]
    )
    if t.province.capital is t:
        text += f" It is the capital of {t.province.name}."
    here = sorted(i.name for i in world.institutions if i.town is t)
    if here:
        text += f" It is home to the {_list(here)}."
    return text


def person_text(p: Person, rng: random.Random) -> str:
    pos = "Her" if p.pronoun == "she" else "His"
    subj = p.pronoun.capitalize()
    text = rng.choice(
        [
            f"{p.name} ({p.born} to {p.died}) was a Calvessan {p.profession}, born in {p.birthplace.name}.",
            f"{p.name} was {_a(p.profession)} from Calvessa. "
            f"{subj} was born in {p.birthplace.name} in {p.born} and died in {p.died}.",
        ]
    )
    if p.mentor:
        text += f" {subj} trained under {p.mentor.name}."
    if p.students:
        text += f" {pos} pupils included {_list([s.name for s in p.students[:3]])}."
    for inst in p.founded:
        text += f" In {inst.founded} {p.pronoun} founded the {inst.name}."
    for work in p.works:
        text += f" {subj} {PROFESSIONS[p.profession][1]} '{work.title}' ({work.year})."
    for bridge in p.bridges:
        text += f" {subj} designed {bridge.name} in {bridge.town.name}."
    for m in p.climbed:
        text += f" In {m.first_ascent} {p.pronoun} made the first ascent of {m.name}."
    return text


def institution_text(i: Institution, rng: random.Random) -> str:
    return rng.choice(
        [
            f"The {i.name} is an institution in {i.town.name}, Calvessa. "
            f"It was founded in {i.founded} by the {i.founder.profession} {i.founder.name}.",
            f"Founded in {i.founded} by {i.founder.name}, the {i.name} stands in the town of {i.town.name}.",
        ]
    )


def work_text(w: Work) -> str:
    return (
        f"'{w.title}' is {_a(w.kind)} by the Calvessan {w.creator.profession} {w.creator.name}, completed in "
        f"{w.year}."
    )


def bridge_text(b: Bridge) -> str:
    return (
        f"{_cap(b.name)} crosses the River {b.town.river.name} at {b.town.name}. It was designed by "
        f"{b.designer.name} and opened in {b.year}; it is {b.length_m} metres long."
    )


def build_passages(world: World, rng: random.Random) -> tuple[list[dict[str, str]], dict[int, str]]:
    """Passages, and the passage id of each entity (keyed by ``id()`` of the entity)."""
    rows: list[dict[str, str]] = []
    ids: dict[int, str] = {}

    def add(entity: object, title: str, text: str) -> None:
        pid = f"p{len(rows):04d}"
        ids[id(entity)] = pid
        rows.append({"id": pid, "title": title, "text": text})

    for p in world.provinces:
        add(p, p.name, province_text(p))
    for w in world.waters:
        add(w, _cap(w.name), water_text(w, world.rivers))
    for m in world.mountains:
        add(m, m.name, mountain_text(m))
    for r in world.rivers:
        add(r, f"River {r.name}", river_text(r, rng))
    for t in world.towns:
        add(t, t.name, town_text(t, world, rng))
    for person in world.people:
        add(person, person.name, person_text(person, rng))
    for i in world.institutions:
        add(i, i.name, institution_text(i, rng))
    for work in world.works:
        add(work, work.title, work_text(work))
    for b in world.bridges:
        add(b, _cap(b.name), bridge_text(b))
    return rows, ids


# --------------------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------------------


@dataclass
class Question:
    kind: str
    text: str
    answers: list[str]
    chain: list[object]
    """Entities whose passages support the answer, in hop order."""
    bridge: list[str]
    """The intermediate answers (entity names) found along the hops."""


def make_questions(world: World, rng: random.Random) -> list[Question]:
    qs: list[Question] = []

    def number(n: int, unit: str) -> list[str]:
        return [f"{n} {unit}", str(n)]

    for i in rng.sample(world.institutions, 8):
        qs.append(
            Question(
                "founder_birthplace",
                f"In which town was the founder of the {i.name} born?",
                [i.founder.birthplace.name],
                [i, i.founder],
                [i.founder.name],
            )
        )
    for p in rng.sample([p for p in world.people if not p.works and not p.founded], 6):
        qs.append(
            Question(
                "birthplace_river",
                f"Which river flows through the town where the {p.profession} {p.name} was born?",
                [p.birthplace.river.name, f"River {p.birthplace.river.name}"],
                [p, p.birthplace],
                [p.birthplace.name],
            )
        )
    for w in rng.sample(world.works, 6):
        c = w.creator
        qs.append(
            Question(
                "creator_province",
                f"In which province was the creator of '{w.title}' born?",
                [c.birthplace.province.name],
                [w, c, c.birthplace],
                [c.name, c.birthplace.name],
            )
        )
    for r in rng.sample(world.rivers, 5):
        qs.append(
            Question(
                "source_height",
                f"How high, in metres, is the mountain on which the River {r.name} rises?",
                number(r.source.height_m, "metres"),
                [r, r.source],
                [r.source.name],
            )
        )
    with_mentor = [b for b in world.bridges if b.designer.mentor is not None]
    seen_designers: set[int] = set()
    for b in rng.sample(with_mentor, len(with_mentor)):
        if id(b.designer) in seen_designers or sum(q.kind == "bridge_mentor" for q in qs) == 5:
            continue
        seen_designers.add(id(b.designer))
        assert b.designer.mentor is not None
        qs.append(
            Question(
                "bridge_mentor",
                f"Who trained the designer of {b.name}?",
                [b.designer.mentor.name],
                [b, b.designer],
                [b.designer.name],
            )
        )
    while sum(q.kind == "founded_first" for q in qs) < 5:
        i1, i2 = rng.sample(world.institutions, 2)
        if i1.founded == i2.founded:
            continue
        first = i1 if i1.founded < i2.founded else i2
        qs.append(
            Question(
                "founded_first",
                f"Which was founded first, the {i1.name} or the {i2.name}?",
                [first.name],
                [i1, i2],
                [],
            )
        )
    while sum(q.kind == "longer_river" for q in qs) < 4:
        a2, c2 = rng.sample(world.rivers, 2)
        if a2.length_km == c2.length_km:
            continue
        longer = a2 if a2.length_km > c2.length_km else c2
        qs.append(
            Question(
                "longer_river",
                f"Which river is longer, the {a2.name} or the {c2.name}?",
                [longer.name, f"River {longer.name}"],
                [a2, c2],
                [],
            )
        )
    for t in rng.sample(world.towns, 6):
        qs.append(
            Question(
                "town_river_mouth",
                f"Into which body of water does the river that runs through {t.name} empty?",
                [_bare(t.river.mouth.name)],
                [t, t.river],
                [t.river.name],
            )
        )
    for p in rng.sample([p for p in world.people if p.mentor is not None], 5):
        assert p.mentor is not None
        qs.append(
            Question(
                "mentor_birth_year",
                f"In what year was the teacher of the {p.profession} {p.name} born?",
                [str(p.mentor.born)],
                [p, p.mentor],
                [p.mentor.name],
            )
        )
    climbed = [m for m in world.mountains if m.first_climber is not None]
    for m in rng.sample(climbed, 50 - len(qs)):
        assert m.first_climber is not None
        qs.append(
            Question(
                "climber_birthplace",
                f"In which town was the first person to climb {m.name} born?",
                [m.first_climber.birthplace.name],
                [m, m.first_climber],
                [m.first_climber.name],
            )
        )
    return qs


def generate(out_dir: Path) -> tuple[Path, Path]:
    rng = random.Random(SEED)
    world = build_world(rng)
    passages, ids = build_passages(world, rng)
    questions = make_questions(world, rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_path = out_dir / "demo_corpus.jsonl"
    questions_path = out_dir / "demo_questions.jsonl"
    with corpus_path.open("w", encoding="utf-8") as f:
        for row in passages:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with questions_path.open("w", encoding="utf-8") as f:
        for n, q in enumerate(questions):
            record = {
                "id": f"demo-{n:03d}",
                "question": q.text,
                "golden_answers": q.answers,
                "metadata": {
                    "type": q.kind,
                    "supporting_passages": [ids[id(e)] for e in q.chain],
                    "bridge_entities": q.bridge,
                },
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return corpus_path, questions_path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    corpus, qs = generate(target)
    print(f"wrote {corpus} and {qs}")
