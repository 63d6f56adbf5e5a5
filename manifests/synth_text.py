"""Sentences for the synthetic corpora of :mod:`manifests.synthesize`.

* :func:`story_sentence` — read-speech sentences for the LibriSpeech layout, from a small grammar over a few hundred
  words (people, things, places, past-tense verbs, contractions and possessives so that ``'`` occurs).
* :func:`command` — spoken commands for the SLURP layout: templates with slot fillers for 18 intents in 10
  scenarios. Intents share most of their words (``turn the ... on/off/up``, times and dates for alarms and calendar
  entries, places for weather, time zones and tickets), so the intent depends on a few words of the sentence.

Every function draws from the ``random.Random`` it is given and nothing else, so a seed fixes the text.
"""
import random
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

# ------------------------------------------------------------------------------------------ read speech grammar

PERSONS = (
    "man woman boy girl king queen soldier farmer doctor teacher captain stranger child friend brother sister "
    "mother father servant prince princess sailor hunter merchant priest judge widow neighbour baker shepherd "
    "fisherman traveller gardener miller knight bishop lady gentleman nurse poet"
).split()
NAMES = (
    "john mary thomas margaret henry elizabeth william anne robert alice james helen charles lucy peter martha"
).split()
THINGS = (
    "letter book horse ship table fire candle key box sword coat hat ring lamp cup chair bell flower map coin "
    "basket blanket bottle bucket carriage clock cloak dog garden gate knife ladder mirror pencil picture purse "
    "rope saddle sheep stone wagon window door"
).split()
PLACES = (
    "house river forest village church bridge road hill field castle market harbour valley kitchen library "
    "station mountain lake city meadow cottage tower orchard shore"
).split()
ADJECTIVES = (
    "old young little great dark bright cold warm quiet strange tall small heavy silent golden silver broken "
    "empty green white black red poor rich kind proud tired happy gentle wild narrow wide ancient lonely "
    "beautiful careful honest hungry"
).split()
#: (base, past) of transitive verbs
VERBS_T = [tuple(p.split("/")) for p in (
    "see/saw find/found take/took open/opened close/closed carry/carried watch/watched follow/followed "
    "remember/remembered hold/held lose/lost bring/brought leave/left meet/met hear/heard call/called "
    "paint/painted build/built keep/kept sell/sold buy/bought love/loved want/wanted touch/touched "
    "count/counted break/broke hide/hid read/read write/wrote steal/stole wash/washed mend/mended "
    "fetch/fetched drop/dropped show/showed burn/burned"
).split()]
#: (base, past) of intransitive verbs
VERBS_I = [tuple(p.split("/")) for p in (
    "walk/walked wait/waited sleep/slept smile/smiled laugh/laughed listen/listened stand/stood weep/wept "
    "speak/spoke return/returned rest/rested hurry/hurried wander/wandered sit/sat run/ran vanish/vanished "
    "arrive/arrived pause/paused sing/sang pray/prayed dance/danced work/worked fall/fell stay/stayed"
).split()]
ADVERBS = "slowly quickly quietly suddenly softly carefully again alone together early gladly often".split()
PREPOSITIONS = "in by near under behind across through along beside into over toward".split()
TIMES = [
    "in the morning", "at night", "before dawn", "after dinner", "that evening", "the next day",
    "in the winter", "on sunday", "long ago", "at noon", "in the spring", "every summer", "after the storm",
]
SPEECH = "said thought knew believed wrote felt heard".split()
PRONOUNS = "he she they we i".split()
POSSESSIVES = "his her their my our".split()
NEGATIONS = "didn't couldn't wouldn't never".split()
NUMBERS = "two three four five six seven eight nine ten twelve twenty forty".split()


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _maybe_adj(rng: random.Random, p: float = 0.5) -> List[str]:
    return [rng.choice(ADJECTIVES)] if rng.random() < p else []


def _person(rng: random.Random) -> List[str]:
    kind = rng.random()
    if kind < 0.25:
        return [rng.choice(NAMES)]
    noun = _maybe_adj(rng) + [rng.choice(PERSONS)]
    if kind < 0.55:
        return ["the"] + noun
    if kind < 0.8:
        return [_a(noun[0])] + noun
    return [rng.choice(POSSESSIVES)] + noun


def _thing(rng: random.Random) -> List[str]:
    kind = rng.random()
    noun = _maybe_adj(rng) + [rng.choice(THINGS)]
    if kind < 0.4:
        return ["the"] + noun
    if kind < 0.6:
        return [_a(noun[0])] + noun
    if kind < 0.8:
        return [rng.choice(POSSESSIVES)] + noun
    owner = rng.choice(NAMES) if rng.random() < 0.5 else rng.choice(PERSONS)
    return (["the"] if owner in PERSONS else []) + [owner + "'s"] + noun


def _place(rng: random.Random) -> List[str]:
    return [rng.choice(PREPOSITIONS), "the"] + _maybe_adj(rng, 0.4) + [rng.choice(PLACES)]


def _story_words(rng: random.Random) -> List[str]:
    t = rng.randrange(12)
    if t == 0:
        return _person(rng) + [rng.choice(VERBS_T)[1]] + _thing(rng) + (_place(rng) if rng.random() < 0.6 else [])
    if t == 1:
        who, verb = _person(rng), rng.choice(VERBS_I)[1]
        adverb = [rng.choice(ADVERBS)] if rng.random() < 0.5 else []
        return who + [verb] + adverb + _place(rng)
    if t == 2:
        return rng.choice(TIMES).split() + _person(rng) + [rng.choice(VERBS_I)[1], rng.choice(ADVERBS)]
    if t == 3:
        return [rng.choice(PRONOUNS), rng.choice(SPEECH), "that"] + _person(rng) + ["was", rng.choice(ADJECTIVES)]
    if t == 4:
        return ["there", "were", rng.choice(NUMBERS)] + _maybe_adj(rng) + [rng.choice(THINGS) + "s"] + _place(rng)
    if t == 5:
        return _person(rng) + [rng.choice(NEGATIONS), rng.choice(VERBS_T)[0]] + _thing(rng)
    if t == 6:
        return ["where", "did"] + _person(rng) + [rng.choice(("go", "hide", "sleep", "wait", "stay"))]
    if t == 7:
        return ["it", "was", rng.choice(ADJECTIVES), "and", rng.choice(ADJECTIVES)] + _place(rng)
    if t == 8:
        return _person(rng) + ["and"] + _person(rng) + [rng.choice(VERBS_I)[1], "together"] + rng.choice(TIMES).split()
    if t == 9:
        lead = rng.choice((["i'm", "sure", "that"], ["it's", "true", "that"], ["they'd", "heard", "that"]))
        return lead + _person(rng) + [rng.choice(VERBS_T)[1]] + _thing(rng)
    if t == 10:
        what = [rng.choice(("bring", "show", "give")), "me"] + _thing(rng)
        return what + ["and", "go", "to", "the", rng.choice(PLACES)]
    who, adjective = _person(rng), rng.choice(ADJECTIVES)
    return who + ["was", adjective, "because", rng.choice(PRONOUNS), rng.choice(VERBS_T)[1]] + _thing(rng)


_PAST = dict(VERBS_T)


def _fix_negation(words: List[str]) -> List[str]:
    """``never`` takes the past tense (the grammar puts a base form after every negation)."""
    out = list(words)
    for i, w in enumerate(out[:-1]):
        if w == "never" and out[i + 1] in _PAST:
            out[i + 1] = _PAST[out[i + 1]]
    return out


def story_sentence(rng: random.Random) -> str:
    """One lower-case read-speech sentence (5–16 words)."""
    while True:
        words = _fix_negation(_story_words(rng))
        if 5 <= len(words) <= 16:
            return " ".join(words)


def story_vocabulary() -> List[str]:
    """Every word :func:`story_sentence` can produce (lower case), for documentation and tests."""
    words = set(PERSONS + NAMES + THINGS + PLACES + ADJECTIVES + ADVERBS + PREPOSITIONS + SPEECH + PRONOUNS)
    words |= set(POSSESSIVES + NEGATIONS + NUMBERS) | {w for t in TIMES for w in t.split()}
    words |= {w for pair in VERBS_T + VERBS_I for w in pair} | {t + "s" for t in THINGS}
    words |= {n + "'s" for n in NAMES + PERSONS}
    words |= set("the a an that was there were where did go hide wait stay it and together i'm sure it's true "
                 "they'd heard bring show give me to because".split())
    return sorted(words)


# ------------------------------------------------------------------------------------------ spoken commands

SLOTS: Dict[str, Sequence[str]] = {
    "time": ("five am", "six thirty", "seven o'clock", "half past eight", "nine fifteen", "ten pm", "noon",
             "midnight", "quarter to seven", "eleven thirty", "four in the afternoon", "eight in the evening"),
    "date": ("today", "tomorrow", "tonight", "on monday", "on tuesday", "on wednesday", "on thursday", "on friday",
             "this weekend", "next week", "next friday", "the day after tomorrow"),
    "place_name": ("london", "paris", "new york", "boston", "chicago", "berlin", "madrid", "tokyo", "seattle",
                   "dublin", "rome", "sydney"),
    "person": ("john", "mary", "my mom", "my boss", "sarah", "david", "the team", "emma", "peter", "my sister"),
    "house_place": ("kitchen", "bedroom", "living room", "bathroom", "hallway", "office", "garage", "dining room"),
    "event_name": ("meeting", "dentist appointment", "lunch", "dinner party", "doctor's appointment", "yoga class",
                   "team call", "birthday party", "haircut"),
    "music_genre": ("jazz", "rock", "classical", "pop", "country", "blues", "hip hop", "reggae"),
    "artist_name": ("the beatles", "taylor swift", "queen", "adele", "coldplay", "madonna", "elvis", "abba"),
    "radio_name": ("radio one", "jazz fm", "the local station", "classic fm", "the news station", "kiss fm"),
    "list_name": ("shopping list", "to do list", "grocery list", "packing list"),
    "item": ("milk", "eggs", "bread", "apples", "coffee", "butter", "rice", "batteries", "soap", "cheese"),
    "transport_type": ("train", "bus", "plane", "ferry", "coach"),
    "weather_descriptor": ("rain", "snow", "be sunny", "be windy", "be cold", "be hot"),
    "change_amount": ("a bit", "a little", "a lot", "to the maximum", "some more"),
    "duration": ("ten minutes", "an hour", "half an hour", "the rest of the day"),
}

#: intent -> templates; ``{slot}`` is filled from :data:`SLOTS`; a leading ``!`` marks an imperative that may get
#: ``please`` / ``can you`` around it
TEMPLATES: Dict[str, Sequence[str]] = {
    "alarm_set": ("!wake me up at {time} {date}", "!set an alarm for {time}", "!set an alarm for {time} {date}",
                  "i need an alarm at {time}", "!wake me at {time}", "alarm for {time} {date}",
                  "!set the alarm for {time} {date}"),
    "alarm_remove": ("!cancel my alarm for {time}", "!remove the {time} alarm", "!delete the alarm for {time} {date}",
                     "!turn off my {time} alarm", "i don't need the alarm at {time} anymore",
                     "!cancel the alarm for {time} {date}"),
    "alarm_query": ("what alarms do i have {date}", "is there an alarm set for {time}", "when is my next alarm",
                    "!show me my alarms for {date}", "did i set an alarm for {time} {date}",
                    "!check the alarm for {time} {date}"),
    "calendar_set": ("!remind me about the {event_name} {date} at {time}", "!add a {event_name} with {person} {date}",
                     "!put the {event_name} in my calendar for {date}",
                     "!schedule a {event_name} with {person} at {time}",
                     "!add the {event_name} to my calendar {date}"),
    "calendar_query": ("what is on my calendar {date}", "when is my {event_name} with {person}",
                       "do i have a {event_name} {date}", "what time is the {event_name} {date}",
                       "!check the {event_name} in my calendar {date}"),
    "calendar_remove": ("!cancel my {event_name} with {person}", "!delete the {event_name} {date}",
                        "!remove the {event_name} at {time} from my calendar", "!clear my calendar for {date}",
                        "!remove the {event_name} from my calendar {date}"),
    "iot_hue_lighton": ("!turn on the lights in the {house_place}", "!switch the {house_place} lights on",
                        "lights on in the {house_place}", "!turn the {house_place} light on",
                        "!turn the lights on in the {house_place}"),
    "iot_hue_lightoff": ("!turn off the lights in the {house_place}", "!switch the {house_place} lights off",
                         "lights off in the {house_place}", "!turn the {house_place} light off",
                         "!turn the lights off in the {house_place}"),
    "iot_hue_lightdim": ("!dim the lights in the {house_place}", "!make the {house_place} lights darker",
                         "!turn the lights down in the {house_place}", "!lower the {house_place} lights"),
    "audio_volume_up": ("!turn the volume up {change_amount}", "!make it louder",
                        "!increase the volume {change_amount}",
                        "volume up {change_amount}", "!turn up the music in the {house_place}",
                        "!turn the music up in the {house_place}"),
    "audio_volume_mute": ("!mute the speakers", "!turn the sound off for {duration}", "!be quiet for {duration}",
                          "!mute the volume in the {house_place}", "!turn off the music",
                          "!turn the music off in the {house_place}"),
    "play_music": ("!play some {music_genre} music", "!play songs by {artist_name}", "i want to hear {artist_name}",
                   "!put on some {music_genre}", "!play {artist_name} in the {house_place}",
                   "!play the music in the {house_place}"),
    "play_radio": ("!play {radio_name}", "!turn on the radio", "!put on {radio_name}", "!tune in to {radio_name}",
                   "!play the radio in the {house_place}"),
    "weather_query": ("what's the weather like {date}", "will it {weather_descriptor} {date} in {place_name}",
                      "is it going to {weather_descriptor} in {place_name}", "how cold is it in {place_name} {date}",
                      "do i need an umbrella {date}", "what's the weather in {place_name} {date}"),
    "datetime_query": ("what time is it in {place_name}", "what's the date {date}", "what day is it {date}",
                       "!tell me the time in {place_name}", "what's the time in {place_name} {date}"),
    "email_sendemail": ("!send an email to {person} about the {event_name}", "!email {person} that i'm running late",
                        "!write an email to {person}", "!reply to the email from {person}"),
    "lists_createoradd": ("!add {item} to my {list_name}", "!put {item} on the {list_name}",
                          "!create a new {list_name}",
                          "i need {item} on my {list_name}"),
    "transport_ticket": ("!book a {transport_type} ticket to {place_name} {date}",
                         "!get me a {transport_type} ticket for {date}",
                         "i need a {transport_type} to {place_name} at {time}", "!buy a ticket to {place_name}"),
}
POLITE_PREFIXES = ("please", "can you", "could you", "olly", "i want you to", "would you")
SLOT_RE = re.compile(r"\{(\w+)\}")


@dataclass
class Command:
    """One spoken command with SLURP's annotation: the sentence, the ``[slot : filler]`` annotation, the tokens and
    the entities as (slot, token indices)."""

    intent: str
    sentence: str
    annotation: str
    tokens: List[str]
    entities: List[Tuple[str, List[int]]]

    @property
    def scenario(self) -> str:
        return self.intent.split("_", 1)[0]

    @property
    def action(self) -> str:
        return self.intent.split("_", 1)[1]


def intents() -> List[str]:
    return sorted(TEMPLATES)


def command(intent: str, rng: random.Random) -> Command:
    """A random sentence for ``intent`` (lower case, questions sometimes ending in ``?`` as in SLURP)."""
    template = rng.choice(TEMPLATES[intent])
    prefix: List[str] = []
    suffix = ""
    if template.startswith("!"):
        template = template[1:]
        roll = rng.random()
        if roll < 0.35:
            prefix = rng.choice(POLITE_PREFIXES).split()
        elif roll < 0.45:
            suffix = "please"
    tokens: List[str] = list(prefix)
    annotated: List[str] = list(prefix)
    entities: List[Tuple[str, List[int]]] = []
    pos = 0
    for match in SLOT_RE.finditer(template):
        literal = template[pos:match.start()].split()
        tokens += literal
        annotated += literal
        slot = match.group(1)
        filler = rng.choice(SLOTS[slot]).split()
        entities.append((slot, list(range(len(tokens), len(tokens) + len(filler)))))
        tokens += filler
        annotated.append(f"[{slot} : {' '.join(filler)}]")
        pos = match.end()
    tail = template[pos:].split() + ([suffix] if suffix else [])
    tokens += tail
    annotated += tail
    sentence = " ".join(tokens)
    question = tokens[0] in ("what", "what's", "when", "is", "do", "did", "will", "how")
    if question and rng.random() < 0.3:
        sentence += "?"
    return Command(intent, sentence, " ".join(annotated), tokens, entities)
