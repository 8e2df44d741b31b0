"""Synthetic long conversations between two people over months, with questions and their evidence turns.

Everything is made here from template grammars and word lists, from a seed: no published benchmark's data.
A conversation has ~25 sessions a few days to two weeks apart; each session mixes small talk (most of the
turns) with story beats: facts stated once (a job, a home city, a pet, a relative, a hobby), some changed
later (a new job, a move), recurring topics with a new detail each time (a garden, training for a race, a
renovation), and later mentions that name a thing without saying what it is ("Biscuit chewed my sneakers",
the pet named months earlier). Questions come with the ids of the turns that answer them:

- fact: a fact as stated, asked in other words;
- latest: the current value of a fact that changed (evidence: the turn that changed it);
- previous: the value before the change (evidence: the first statement and the change);
- temporal: what someone said about a recurring topic in a given month (evidence: that month's turns);
- indirect: a later mention that names the thing only (the question names what it is);
- multi: something stated in several turns (all pets);
- when: when something happened (the turn that says it; its date answers).

Two splits keep a tuned figure honest: `tune` and `heldout` use different seeds, disjoint halves of the name
and place lists, and disjoint halves of the question phrasings, so weights tuned on one are reported on the
other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

FIRST_NAMES = [
    "Maya",
    "Tom",
    "Priya",
    "Lukas",
    "Aisha",
    "Diego",
    "Hannah",
    "Kenji",
    "Sofia",
    "Omar",
    "Clara",
    "Mateo",
    "Ingrid",
    "Ravi",
    "Elena",
    "Jonah",
    "Amara",
    "Felix",
    "Nadia",
    "Oscar",
    "Leila",
    "Pavel",
    "Greta",
    "Samuel",
    "Yuki",
    "Marco",
    "Zara",
    "Henrik",
    "Chloe",
    "Andre",
    "Mira",
    "Tobias",
    "Lucia",
    "Rafael",
    "Freya",
    "Ibrahim",
    "Julia",
    "Nikolai",
    "Alma",
    "Victor",
    "Selma",
    "Hugo",
    "Noor",
    "Emil",
    "Paula",
    "Arjun",
    "Vera",
    "Dario",
    "Linnea",
    "Kofi",
]
RELATIVE_NAMES = [
    "Lena",
    "Jakob",
    "Rosa",
    "Milo",
    "Ines",
    "Bruno",
    "Tessa",
    "Karl",
    "Nina",
    "Otto",
    "Lotte",
    "Ruben",
    "Ada",
    "Theo",
    "Mila",
    "Jonas",
    "Carla",
    "Anton",
    "Ella",
    "Boris",
    "Ida",
    "Leon",
    "Marta",
    "Sven",
    "Olga",
    "Pablo",
    "Rita",
    "Erik",
    "Dora",
    "Felipe",
]
PET_NAMES = [
    "Biscuit",
    "Pepper",
    "Mochi",
    "Ziggy",
    "Nugget",
    "Clover",
    "Waffles",
    "Pixel",
    "Juniper",
    "Rocket",
    "Olive",
    "Pickles",
    "Tofu",
    "Maple",
    "Bandit",
    "Luna",
    "Sprout",
    "Noodle",
    "Pumpkin",
    "Ginger",
    "Sushi",
    "Mango",
    "Cosmo",
    "Fig",
    "Pebble",
    "Kiwi",
    "Button",
    "Hazel",
    "Dash",
    "Poppy",
]
CITIES = [
    "Denver",
    "Portland",
    "Austin",
    "Lisbon",
    "Toronto",
    "Edinburgh",
    "Melbourne",
    "Seattle",
    "Chicago",
    "Dublin",
    "Vancouver",
    "Boston",
    "Barcelona",
    "Copenhagen",
    "Montreal",
    "Vienna",
    "Nashville",
    "Helsinki",
    "Prague",
    "Oslo",
    "Minneapolis",
    "Valencia",
    "Porto",
    "Rotterdam",
    "Zurich",
    "Munich",
    "Atlanta",
    "Pittsburgh",
    "Tucson",
    "Halifax",
    "Bristol",
    "Leeds",
    "Gothenburg",
    "Bologna",
    "Kraków",
    "Ljubljana",
    "Tallinn",
    "Bergen",
    "Ghent",
    "Utrecht",
]
COMPANIES = [
    "Northwind",
    "Brightlake",
    "Corvel",
    "Halden",
    "Quillion",
    "Marrow&Co",
    "Stellate",
    "Oakridge",
    "Finchley",
    "Tessellate",
    "Lumenfield",
    "Arbor",
    "Kestrel",
    "Ironbark",
    "Vantage",
    "Pinecrest",
    "Solace",
    "Meridian",
    "Harbor&Pine",
    "Bluestem",
    "Copperline",
    "Driftwood",
    "Granite",
    "Labs",
    "Willowmere",
    "Redfern",
    "Castellan",
    "Novum",
    "Thistle",
    "Larkspur",
    "Emberly",
]
JOBS = [
    "nurse",
    "graphic designer",
    "data analyst",
    "high school teacher",
    "software engineer",
    "pastry chef",
    "architect",
    "physical therapist",
    "accountant",
    "journalist",
    "veterinary technician",
    "marketing manager",
    "electrician",
    "librarian",
    "product manager",
    "dental hygienist",
    "landscape gardener",
    "sound engineer",
    "pharmacist",
    "social worker",
]
PETS = [
    ("dog", "puppy"),
    ("cat", "kitten"),
    ("rabbit", "bunny"),
    ("parrot", "bird"),
    ("hamster", "little furball"),
    ("tortoise", "shell buddy"),
]
RELATIONS = ["sister", "brother", "cousin", "best friend", "aunt", "uncle", "grandmother", "roommate"]
RELATIVE_EVENTS = [
    (
        "is getting married",
        "wedding",
        "the wedding",
        [
            "the ceremony was by a lake",
            "everyone cried during the vows",
            "the band played until 2am",
            "the cake collapsed but nobody cared",
        ],
    ),
    (
        "is having a baby",
        "baby",
        "the baby",
        [
            "the baby arrived two weeks early",
            "they named her Juniper",
            "the baby finally sleeps through the night",
            "I held the baby for the first time",
        ],
    ),
    (
        "is having knee surgery",
        "surgery",
        "the surgery",
        [
            "the operation went smoothly",
            "the recovery is slower than expected",
            "the physio says three more months",
            "the cast came off last week",
        ],
    ),
    (
        "is graduating from nursing school",
        "graduation",
        "graduation",
        [
            "the ceremony was in a huge stadium",
            "the diploma is framed on the wall already",
            "we threw a surprise party afterwards",
            "the speech made everyone laugh",
        ],
    ),
    (
        "is opening a bakery",
        "bakery",
        "the bakery",
        [
            "the bakery opened with a line around the block",
            "the croissants sold out by nine",
            "the oven broke on the second day",
            "a food blogger reviewed it",
        ],
    ),
]
INSTRUMENTS = [
    "cello",
    "ukulele",
    "piano",
    "saxophone",
    "violin",
    "drums",
    "banjo",
    "harmonica",
    "trumpet",
    "flute",
]
SPORTS = [
    "bouldering",
    "rowing",
    "fencing",
    "salsa dancing",
    "pottery",
    "archery",
    "kayaking",
    "tennis",
    "chess",
    "woodworking",
]
LANGUAGES = ["Japanese", "Portuguese", "Italian", "Korean", "Swedish", "Greek", "Turkish", "Dutch"]

# Recurring projects: each update is one new detail (with a number, so every update differs).
PROJECTS: dict[str, tuple[list[str], list[str]]] = {
    "garden": (
        ["the garden", "the vegetable garden", "gardening"],
        [
            "The tomatoes in my garden finally turned red, I picked {n} of them this morning.",
            "Slugs ate half the lettuce in the vegetable patch, {n} plants gone overnight.",
            "I planted {n} new rows of carrots in the allotment.",
            "The pumpkins are huge now, the biggest one weighs about {n} kilos.",
            "I built a little greenhouse for the garden, cost me about {n} dollars.",
            "The zucchini plants are out of control, I gave {n} away to the neighbours.",
            "A frost killed the basil in my garden, I'll have to replant {n} pots.",
            "The strawberries came up, we ate {n} of them straight from the patch.",
            "I finally got the drip irrigation working for the vegetable beds, {n} meters of hose.",
            "The sunflowers are taller than me now, {n} of them along the fence.",
        ],
    ),
    "race": (
        ["marathon training", "running", "the race training"],
        [
            "Did my long run today, {n} kilometers without stopping.",
            "My knee started hurting around kilometer {n} so I cut the run short.",
            "New personal best on the 10k, shaved {n} seconds off.",
            "The training plan says {n} runs a week now, it's brutal.",
            "I bought new running shoes, my old pair had {n} kilometers on them.",
            "Ran the hill repeats, {n} times up that awful slope.",
            "Signed up for the half marathon, bib number {n}.",
            "Took {n} days off running because of a cold.",
            "Joined a running club, there were {n} of us at the track.",
            "My pace is down to about {n} minutes per kilometer on easy runs.",
        ],
    ),
    "renovation": (
        ["the kitchen renovation", "the renovation", "the house project"],
        [
            "The contractor finally tore out the old kitchen cabinets, {n} of them.",
            "We picked the floor tiles for the kitchen, they were {n} dollars a box.",
            "The plumber found a leak behind the wall, another {n} dollars on the bill.",
            "The countertops arrived, {n} centimeters too short, unbelievable.",
            "Painted the living room a dark green, took {n} coats.",
            "We've been washing dishes in the bathtub for {n} weeks now.",
            "The new oven is installed, it has {n} cooking modes I'll never use.",
            "The electrician rewired the whole kitchen in {n} days.",
            "We found old newspapers from {n} hidden under the floorboards.",
            "The renovation budget is now {n} thousand over, I'm trying not to think about it.",
        ],
    ),
    "language": (
        ["{lang} lessons", "learning {lang}", "the {lang} course"],
        [
            "My {lang} lessons are going well, I learned {n} new words this week.",
            "I had my first conversation in {lang} with a waiter, lasted about {n} minutes.",
            "The {lang} grammar test had {n} questions and I passed.",
            "My {lang} tutor gave me {n} pages of homework.",
            "I watched a whole {lang} movie without subtitles, all {n} minutes of it.",
            "My {lang} streak in the app is {n} days now.",
            "I wrote {n} sentences in my {lang} journal today.",
            "Switched to the intermediate {lang} class, there are {n} people in it.",
        ],
    ),
}

SMALL_TALK = [
    "Haha, yeah totally.",
    "Lol, that's wild.",
    "Same here, honestly.",
    "Oh no, that sounds rough.",
    "That's so cool!",
    "Ugh, Mondays.",
    "I know what you mean.",
    "Ha! Classic.",
    "Wait, really?",
    "No way!",
    "Fair enough.",
    "Sounds like a plan.",
    "Totally agree.",
    "Oh nice, good for you.",
    "That made me laugh.",
    "Hmm, I'm not sure about that.",
    "Right?? Exactly.",
    "Aw, that's sweet.",
    "Yeah, it's been a long week.",
    "I hear you.",
]
SMALL_TALK_SLOTS = [
    "The weather has been {weather} all week here.",
    "I binge-watched {show} last night, couldn't stop.",
    "Have you tried the new {food} place downtown? It's {opinion}.",
    "Work has been {work} lately, so many meetings.",
    "I slept like {n} hours last night, I'm a zombie.",
    "My phone screen cracked again, {n} times this year.",
    "Traffic was {opinion} this morning, took me {n} minutes to get in.",
    "I made {food} for dinner, turned out {opinion}.",
    "Did you see the game on {day}? {opinion} ending.",
    "I'm thinking of repainting my bedroom, maybe {color}.",
    "My neighbour's {animal} kept me up all night.",
    "I finally finished reading {show}, the ending was {opinion}.",
    "Coffee number {n} today, don't judge.",
    "We ordered {food} again, third time this week.",
    "I need a vacation so badly, maybe somewhere {weather}.",
    "My inbox has {n} unread emails, I've given up.",
    "The {animal} video you sent me was hilarious.",
    "I went to a {food} festival on {day}, way too crowded.",
    "I'm trying to drink more water, {n} glasses a day.",
    "My laptop is so slow, it takes {n} minutes to boot.",
    "I tried a {color} nail polish, not sure it's me.",
    "It's my turn to host game night on {day}.",
    "I cleaned the whole apartment on {day}, felt great.",
    "Do you have any {show}-style recommendations?",
]
SLOT_WORDS = {
    "weather": ["rainy", "freezing", "super hot", "grey", "windy", "humid", "sunny", "foggy"],
    "show": [
        "that baking show",
        "the detective series",
        "a nature documentary",
        "that space drama",
        "the cooking competition",
        "a true crime podcast",
        "the fantasy series",
        "an old sitcom",
    ],
    "food": ["ramen", "taco", "Thai", "pizza", "sushi", "burger", "dumpling", "falafel", "curry", "pho"],
    "opinion": [
        "amazing",
        "pretty bad",
        "okay I guess",
        "incredible",
        "overrated",
        "surprisingly good",
        "a mess",
    ],
    "work": ["crazy", "slow", "stressful", "weirdly calm", "chaotic", "busy"],
    "day": ["Saturday", "Sunday", "Friday", "Tuesday", "Wednesday"],
    "color": ["sage green", "navy blue", "terracotta", "pale yellow", "charcoal", "lavender"],
    "animal": ["dog", "cat", "parrot", "rooster", "puppy"],
}
# Small talk that brushes the story's topics without being evidence for anything asked.
NEAR_MISSES = [
    "My coworker just started as a {job} at {company}.",
    "A friend of mine moved to {city} last year, she loves it.",
    "My neighbour has a {species} called {pet}, so cute.",
    "I read that {hobby} is great for stress.",
    "Have you ever been to {city}? I keep hearing good things.",
    "I was thinking about learning {lang} too, someday.",
    "My mom started a little vegetable garden on her balcony.",
    "Honestly running a marathon sounds like torture to me.",
    "Our landlord keeps promising to redo the kitchen.",
    "My uncle used to play the {instrument} at every family party.",
    "There's a {job} in my building who works crazy hours.",
    "I saw a {species} at the park wearing a tiny raincoat.",
    "A wedding invitation came in the mail today, not sure I'm going.",
    "The bakery near my office closed down, so sad.",
    "My sister keeps sending me apartment listings in {city}.",
]
GREETINGS = [
    "Hey {other}! How's your week going?",
    "Hi {other}, long time no talk!",
    "Morning! Got a minute to chat?",
    "Hey hey, what's new?",
    "Hi! Sorry I went quiet, things got busy.",
    "Yo {other}, how are things?",
]
GREETING_REPLIES = [
    "Hey! Pretty good, you?",
    "Hi {other}! All good here, busy as always.",
    "Hey, great to hear from you!",
    "Not bad at all, just tired.",
    "Hi! I was just thinking about you.",
]
GOODBYES = [
    "Gotta run, talk soon!",
    "Okay, I need to sleep. Night!",
    "Let's catch up again next week.",
    "Talk later, take care!",
    "Bye for now!",
]

# Statements of facts (the owner says them), and what the other person may have asked just before.
JOB_INTRO = [
    "I started a new job as a {job} at {company} this week.",
    "So I got the {job} position at {company}, first day was Monday!",
    "Big news: I'm working as a {job} now, at a place called {company}.",
    "I accepted the offer from {company}, I'll be their new {job}.",
]
JOB_CHANGE = [
    "I quit {old_company}. Starting at {company} next week as a {job}.",
    "I left my job at {old_company}, I'm a {job} at {company} now.",
    "Career change! No more {old_company}, I'm now a {job} with {company}.",
    "I handed in my notice at {old_company} and took a {job} role at {company}.",
]
JOB_PROMPTS = ["Any news on the work front?", "How's the job hunt going?", "So what's happening with work?"]
CITY_INTRO = [
    "I've lived in {city} for about {n} years now.",
    "{city} has been home for {n} years, I can't imagine leaving.",
    "Since I moved to {city} {n} years ago I've never looked back.",
]
CITY_CHANGE = [
    "We signed the lease, I'm moving from {old_city} to {city} next month!",
    "Done with {old_city}. The movers take everything to {city} on Friday.",
    "I'm packing boxes, the move from {old_city} to {city} is happening.",
    "Officially a resident of {city} now, {old_city} feels like ages ago.",
]
CITY_PROMPTS = [
    "Are you still thinking about moving?",
    "How's the apartment search?",
    "Any news on the big move?",
]
PET_INTRO = [
    "We adopted a {species} from the shelter! {name} is already running the house.",
    "Meet {name}, our new {species}. Picked {name} up on Saturday.",
    "I finally did it, I got a {species}. I named it {name}.",
    "There's a {young} in my apartment now, {name}. Best decision ever.",
]
PET_MENTION = [
    "{name} chewed up my new sneakers this morning.",
    "{name} learned to open the pantry door, we're doomed.",
    "Took {name} to the vet, {n} shots and a lot of drama.",
    "{name} slept on my laptop keyboard and sent an email to my boss.",
    "{name} figured out the doorbell means treats.",
]
PET_PROMPTS = ["How's the little one settling in?", "How's your furry roommate?", "Any new chaos at home?"]
RELATIVE_INTRO = [
    "My {relation} {name} {event} in {month}.",
    "Family news: {name}, my {relation}, {event} in {month}!",
    "You know my {relation} {name}? {name} {event} in {month}.",
]
RELATIVE_MENTION = [
    "Quick update on {name}: {detail}.",
    "So about {name}: {detail}.",
    "Talked to {name} yesterday, {detail}.",
]
RELATIVE_PROMPTS = ["How's the family doing?", "Any family news?", "How did the big day go?"]
HOBBY_INTRO = [
    "I signed up for {hobby} classes, twice a week.",
    "I've picked up {hobby}, I'm terrible but it's fun.",
    "My new obsession is {hobby}, I go every Thursday.",
]
INSTRUMENT_INTRO = [
    "I bought a secondhand {instrument} and I'm taking lessons.",
    "I'm learning to play the {instrument}, my neighbours hate me.",
    "Started {instrument} lessons, my teacher is very patient.",
]
PROJECT_PROMPTS = {
    "garden": ["How's the garden?", "Anything growing yet?", "How are your plants?"],
    "race": ["How's the training going?", "Still running every day?", "How are the legs?"],
    "renovation": ["How's the house project?", "Is the kitchen done yet?", "How's the remodel?"],
    "language": ["How are the lessons going?", "Learned any new words?", "How's the studying?"],
}

# Question phrasings, each list split by parity: even ones for the tune split, odd ones for heldout.
Q_JOB_LATEST = [
    "Where does {p} work now?",
    "What job did {p} switch to?",
    "What is {p}'s new job?",
    "Which company did {p} join after quitting?",
    "What's {p}'s current role at work?",
    "Where did {p} start working after leaving the old job?",
]
Q_JOB_PREVIOUS = [
    "Where did {p} work before changing jobs?",
    "What was {p}'s first job mentioned?",
    "Which company did {p} leave?",
    "What job did {p} have originally?",
]
Q_CITY_LATEST = [
    "Which city did {p} move to?",
    "Where does {p} live now after the move?",
    "What city is {p} moving to?",
    "Where is {p}'s new home?",
]
Q_CITY_PREVIOUS = [
    "Where did {p} live before the move?",
    "Which city did {p} leave?",
    "What city was {p} originally living in?",
    "How long had {p} lived in their old city?",
]
Q_PET_NAME = [
    "What is the name of {p}'s {species}?",
    "What did {p} name the {species}?",
    "What's {p}'s {species} called?",
    "Which {species} did {p} adopt, and what's its name?",
]
Q_PET_INDIRECT = [
    "What trouble has {p}'s {species} caused?",
    "What did {p}'s pet {species} get up to?",
    "What mischief did {p}'s {species} do?",
    "Any funny stories about {p}'s {species}?",
]
Q_PETS_ALL = [
    "What pets does {p} have?",
    "Which animals live with {p}?",
    "What animals has {p} adopted?",
    "Does {p} have any pets, and which?",
]
Q_PET_WHEN = [
    "When did {p} get the {species}?",
    "When did {p} adopt a {species}?",
    "How long ago did {p} bring home the {species}?",
    "At what point did {p} get a {species}?",
]
Q_RELATIVE = [
    "What is happening with {p}'s {relation}?",
    "What news did {p} share about their {relation}?",
    "What did {p} say about their {relation}'s {thing}?",
    "How is {p}'s {relation} doing with the {thing}?",
]
Q_RELATIVE_INDIRECT = [
    "How did {p}'s {relation}'s {thing} go?",
    "What happened at {p}'s {relation}'s {thing}?",
    "Any update on the {thing} of {p}'s {relation}?",
    "What did {p} tell about how the {thing} of their {relation} went?",
]
Q_HOBBY = [
    "What hobby did {p} take up?",
    "What classes did {p} sign up for?",
    "What new activity is {p} into?",
    "What does {p} do for fun lately?",
]
Q_INSTRUMENT = [
    "What instrument is {p} learning?",
    "Which instrument does {p} play?",
    "What is {p} taking music lessons for?",
    "What did {p} buy secondhand to learn music?",
]
Q_TEMPORAL = [
    "What did {p} say about {topic} in {month}?",
    "In {month}, what was {p}'s update on {topic}?",
    "How was {topic} going for {p} in {month}?",
    "What happened with {topic} for {p} back in {month}?",
    "What did {p} mention about {topic} during {month}?",
    "Around {month}, what news did {p} have about {topic}?",
]


def _half(items: list[str], split: str) -> list[str]:
    """Even-indexed phrasings for the tune split, odd ones for heldout."""
    return items[0::2] if split == "tune" else items[1::2]


@dataclass
class Turn:
    """One dialog turn: stored as one archival passage `"<speaker>: <text>"` at `time`."""

    id: str
    session: int
    speaker: str
    text: str
    time: datetime

    @property
    def passage_text(self) -> str:
        return f"{self.speaker}: {self.text}"


@dataclass
class Question:
    """A question and the ids of the turns that answer it."""

    text: str
    kind: str
    evidence: list[str]


@dataclass
class Conversation:
    """Two people's sessions of turns, and questions about them."""

    id: str
    people: tuple[str, str]
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


@dataclass
class _Beat:
    """A story beat to place in a session: the turns it adds (speaker index, text) and a callback key."""

    turns: list[tuple[int, str]]
    key: str = ""


class _Writer:
    def __init__(self, rng: random.Random, split: str, conversation_id: str, people: tuple[str, str]) -> None:
        self.rng = rng
        self.split = split
        self.conversation = Conversation(conversation_id, people)
        self.marks: dict[str, list[Turn]] = {}

    def small_talk(self) -> str:
        rng = self.rng
        if rng.random() < 0.2:
            return rng.choice(NEAR_MISSES).format(
                job=rng.choice(JOBS),
                company=rng.choice(COMPANIES),
                city=rng.choice(CITIES),
                species=rng.choice(PETS)[0],
                pet=rng.choice(PET_NAMES),
                hobby=rng.choice(SPORTS),
                lang=rng.choice(LANGUAGES),
                instrument=rng.choice(INSTRUMENTS),
            )
        if rng.random() < 0.4:
            return rng.choice(SMALL_TALK)
        template = rng.choice(SMALL_TALK_SLOTS)
        words = {slot: rng.choice(options) for slot, options in SLOT_WORDS.items()}
        return template.format(n=rng.randint(2, 40), **words)

    def add(self, session: int, speaker: int, text: str, when: datetime, key: str = "") -> Turn:
        conversation = self.conversation
        turn = Turn(
            f"{conversation.id}-t{len(conversation.turns)}", session, conversation.people[speaker], text, when
        )
        conversation.turns.append(turn)
        if key:
            self.marks.setdefault(key, []).append(turn)
        return turn

    def ask(self, kind: str, phrasings: list[str], evidence: list[Turn], **slots: str) -> None:
        if not evidence:
            return
        text = self.rng.choice(_half(phrasings, self.split)).format(**slots)
        self.conversation.questions.append(Question(text, kind, [turn.id for turn in evidence]))


def conversation(seed: int, split: str, index: int) -> Conversation:
    """One conversation of the split, the same for the same (seed, split, index)."""
    rng = random.Random(f"{split}/{seed}/{index}")
    half = 0 if split == "tune" else 1

    def pick(pool: list[str], count: int) -> list[str]:
        return rng.sample(pool[half::2], count)

    # The people of a split's conversations are different people while the half list lasts (12 pairs).
    names = FIRST_NAMES[half::2]
    random.Random(f"{split}/{seed}/names").shuffle(names)
    people = (
        tuple(names[2 * index : 2 * index + 2]) if 2 * index + 1 < len(names) else tuple(pick(FIRST_NAMES, 2))
    )
    writer = _Writer(rng, split, f"{split}{seed}c{index}", (people[0], people[1]))
    start = datetime(rng.choice([2023, 2024]), rng.randint(1, 12), rng.randint(1, 28), 19, tzinfo=UTC)
    sessions = rng.randint(22, 28)
    dates = []
    when = start
    for _ in range(sessions):
        dates.append(when)
        when += timedelta(days=rng.randint(3, 16), hours=rng.randint(-3, 3))

    beats: dict[int, list[_Beat]] = {i: [] for i in range(sessions)}
    followups: list[tuple[str, int, str, dict[str, str]]] = []
    cities = pick(CITIES, 4)
    companies = pick(COMPANIES, 4)
    pet_names = pick(PET_NAMES, 4)
    relative_names = pick(RELATIVE_NAMES, 2)

    def place(lo: float, hi: float) -> int:
        return rng.randint(int(lo * (sessions - 1)), int(hi * (sessions - 1)))

    def prompted(owner: int, prompts: list[str], text: str, key: str, chance: float = 0.6) -> _Beat:
        lines = [(1 - owner, rng.choice(prompts))] if rng.random() < chance else []
        return _Beat([*lines, (owner, text)], key)

    for owner in (0, 1):
        p = people[owner]
        # Job, changed later.
        job, new_job = rng.sample(JOBS, 2)
        company, new_company = companies[2 * owner], companies[2 * owner + 1]
        intro, change = place(0.0, 0.35), place(0.55, 0.9)
        beats[intro].append(
            prompted(
                owner, JOB_PROMPTS, rng.choice(JOB_INTRO).format(job=job, company=company), f"job0/{owner}"
            )
        )
        beats[change].append(
            prompted(
                owner,
                JOB_PROMPTS,
                rng.choice(JOB_CHANGE).format(job=new_job, company=new_company, old_company=company),
                f"job1/{owner}",
            )
        )
        followups += [("job", owner, p, {})]
        # Home city, changed later for one of the two.
        city, new_city = cities[2 * owner], cities[2 * owner + 1]
        beats[place(0.0, 0.3)].append(
            _Beat([(owner, rng.choice(CITY_INTRO).format(city=city, n=rng.randint(2, 12)))], f"city0/{owner}")
        )
        if owner == 0 or rng.random() < 0.5:
            beats[place(0.5, 0.95)].append(
                prompted(
                    owner,
                    CITY_PROMPTS,
                    rng.choice(CITY_CHANGE).format(city=new_city, old_city=city),
                    f"city1/{owner}",
                )
            )
            followups.append(("city", owner, p, {}))
        # One or two pets, named once, mentioned later by name only.
        for i, (species, young) in enumerate(rng.sample(PETS, rng.choice([1, 1, 2]))):
            name = pet_names[2 * owner + i]
            at = place(0.05, 0.6)
            beats[at].append(
                prompted(
                    owner,
                    PET_PROMPTS,
                    rng.choice(PET_INTRO).format(species=species, young=young, name=name),
                    f"pet/{owner}/{species}",
                    0.3,
                )
            )
            later = min(sessions - 1, at + rng.randint(2, 8))
            beats[later].append(
                prompted(
                    owner,
                    PET_PROMPTS,
                    rng.choice(PET_MENTION).format(name=name, n=rng.randint(2, 5)),
                    f"petref/{owner}/{species}",
                )
            )
            followups.append(("pet", owner, p, {"species": species}))
        followups.append(("pets", owner, p, {}))
        # A relative with an event, its outcome told later by name only.
        relation = rng.choice(RELATIONS)
        event, thing, _, details = rng.choice(RELATIVE_EVENTS)
        name = relative_names[owner]
        at = place(0.0, 0.5)
        month = MONTHS[(dates[at].month + rng.randint(0, 2)) % 12]
        beats[at].append(
            _Beat(
                [
                    (
                        owner,
                        rng.choice(RELATIVE_INTRO).format(
                            relation=relation, name=name, event=event, month=month
                        ),
                    )
                ],
                f"rel0/{owner}",
            )
        )
        later = min(sessions - 1, at + rng.randint(3, 9))
        beats[later].append(
            prompted(
                owner,
                RELATIVE_PROMPTS,
                rng.choice(RELATIVE_MENTION).format(name=name, thing=thing, detail=rng.choice(details)),
                f"rel1/{owner}",
            )
        )
        followups.append(("relative", owner, p, {"relation": relation, "thing": thing}))
        # A hobby or an instrument.
        if rng.random() < 0.5:
            beats[place(0.1, 0.8)].append(
                _Beat([(owner, rng.choice(HOBBY_INTRO).format(hobby=rng.choice(SPORTS)))], f"hobby/{owner}")
            )
            followups.append(("hobby", owner, p, {}))
        else:
            beats[place(0.1, 0.8)].append(
                _Beat(
                    [(owner, rng.choice(INSTRUMENT_INTRO).format(instrument=rng.choice(INSTRUMENTS)))],
                    f"instrument/{owner}",
                )
            )
            followups.append(("instrument", owner, p, {}))
        # A recurring project with an update every few sessions.
        topic = rng.choice(sorted(PROJECTS))
        names, updates = PROJECTS[topic]
        lang = rng.choice(LANGUAGES)
        chosen = rng.sample(updates, min(len(updates), rng.randint(6, 9)))
        slots = sorted(rng.sample(range(sessions), len(chosen)))
        for session, template in zip(slots, chosen, strict=True):
            beats[session].append(
                prompted(
                    owner,
                    PROJECT_PROMPTS[topic],
                    template.format(n=rng.randint(2, 60), lang=lang),
                    f"project/{owner}/{session}",
                    0.5,
                )
            )
        followups.append(("project", owner, p, {"topic": rng.choice(names).format(lang=lang)}))

    for session, when in enumerate(dates):
        a = rng.randint(0, 1)
        other = people[1 - a]
        writer.add(session, a, rng.choice(GREETINGS).format(other=other), when)
        writer.add(
            session, 1 - a, rng.choice(GREETING_REPLIES).format(other=people[a]), when + timedelta(minutes=1)
        )
        minute = 2
        blocks: list[list[tuple[int, str, str]]] = [
            [(speaker, text, beat.key) for speaker, text in beat.turns] for beat in beats[session]
        ]
        for _ in range(rng.randint(3, 6)):
            blocks.append([(rng.randint(0, 1), writer.small_talk(), "") for _ in range(rng.randint(2, 6))])
        rng.shuffle(blocks)
        for block in blocks:
            for speaker, text, key in block:
                writer.add(
                    session,
                    speaker,
                    text,
                    when + timedelta(minutes=minute),
                    key if speaker is not None else "",
                )
                minute += rng.randint(1, 3)
                if key and rng.random() < 0.7:
                    # A short reaction after a beat, as people do.
                    writer.add(session, 1 - speaker, rng.choice(SMALL_TALK), when + timedelta(minutes=minute))
                    minute += 1
        writer.add(session, rng.randint(0, 1), rng.choice(GOODBYES), when + timedelta(minutes=minute))

    marks = writer.marks

    def owned(key: str) -> list[Turn]:
        # The turns of a beat spoken by its owner (not the other person's prompt).
        return [turn for turn in marks.get(key, []) if turn.speaker == people[int(key.split("/")[1])]]

    for kind, owner, p, extra in followups:
        if kind == "job":
            writer.ask("latest", Q_JOB_LATEST, owned(f"job1/{owner}"), p=p)
            writer.ask("previous", Q_JOB_PREVIOUS, owned(f"job0/{owner}") + owned(f"job1/{owner}"), p=p)
        elif kind == "city":
            writer.ask("latest", Q_CITY_LATEST, owned(f"city1/{owner}"), p=p)
            writer.ask("previous", Q_CITY_PREVIOUS, owned(f"city0/{owner}") + owned(f"city1/{owner}"), p=p)
        elif kind == "pet":
            species = extra["species"]
            writer.ask("fact", Q_PET_NAME, owned(f"pet/{owner}/{species}"), p=p, species=species)
            writer.ask("indirect", Q_PET_INDIRECT, owned(f"petref/{owner}/{species}"), p=p, species=species)
            writer.ask("when", Q_PET_WHEN, owned(f"pet/{owner}/{species}"), p=p, species=species)
        elif kind == "pets":
            evidence = [turn for key in marks if key.startswith(f"pet/{owner}/") for turn in owned(key)]
            writer.ask("multi", Q_PETS_ALL, evidence, p=p)
        elif kind == "relative":
            writer.ask("fact", Q_RELATIVE, owned(f"rel0/{owner}"), p=p, **extra)
            writer.ask("indirect", Q_RELATIVE_INDIRECT, owned(f"rel1/{owner}"), p=p, **extra)
        elif kind in ("hobby", "instrument"):
            writer.ask("fact", Q_HOBBY if kind == "hobby" else Q_INSTRUMENT, owned(f"{kind}/{owner}"), p=p)
        elif kind == "project":
            told = [turn for key in marks if key.startswith(f"project/{owner}/") for turn in owned(key)]
            by_month: dict[tuple[int, int], list[Turn]] = {}
            for turn in told:
                by_month.setdefault((turn.time.year, turn.time.month), []).append(turn)
            for (_, number), evidence in rng.sample(sorted(by_month.items()), min(3, len(by_month))):
                writer.ask(
                    "temporal", Q_TEMPORAL, evidence, p=p, topic=extra["topic"], month=MONTHS[number - 1]
                )
    return writer.conversation


def conversations(split: str, seed: int, count: int, *, first: int = 0) -> list[Conversation]:
    """`count` conversations of the split, from the `first`."""
    return [conversation(seed, split, i) for i in range(first, first + count)]
