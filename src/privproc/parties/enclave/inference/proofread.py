"""Proofreading by rule: the errors a message holds that need no model to see, and their fixes.

    fixed = correct(text)        # the message with every known error corrected, nothing else
    errors(text)                 # how many known errors it holds (0: none these rules know)

A proofread starts from `correct(text)`, so the model's version never loses a fix the rules made,
and `tasks.check_rewrite` refuses a proofread that still holds a known error.

Rules of this module:
- Pure functions of a string; no model, no I/O, nothing kept.
- Only errors that are errors wherever they stand: common misspellings that are no English word
  ("tommorow", "libary"), contractions written without their apostrophe where the bare word is
  no word ("dont", "im", "didnt"), a lone lowercase "i", a word said twice in a row ("the the"), a
  sentence that starts in lowercase, "ill" before a verb ("ill meet you"). A word that is right
  in some sentences ("wont", "its", "were", "ill" alone) is left as it is: a wrong fix is worse
  than a missed one.
- Everything else in the message (its words, spacing, punctuation, case) stays as written.
"""

from __future__ import annotations

import re

__all__ = ["correct", "errors"]

# Misspellings seen often in messages, each no English word, with the one word it stands for.
_MISSPELT = {
    "tommorow": "tomorrow", "tomorow": "tomorrow", "tommorrow": "tomorrow",
    "libary": "library", "definately": "definitely", "definatly": "definitely",
    "recieve": "receive", "recieved": "received", "beleive": "believe", "wierd": "weird",
    "seperate": "separate", "untill": "until", "alot": "a lot", "occured": "occurred",
    "accomodation": "accommodation", "adress": "address", "begining": "beginning",
    "calender": "calendar", "comming": "coming", "goverment": "government", "happend": "happened",
    "freind": "friend", "freinds": "friends", "wensday": "Wednesday", "wednsday": "Wednesday",
    "thursady": "Thursday", "febuary": "February", "resturant": "restaurant",
    "restaraunt": "restaurant", "neccessary": "necessary", "necesary": "necessary",
    "occassion": "occasion", "embarassed": "embarrassed", "tounge": "tongue",
    "truely": "truly", "finaly": "finally", "realy": "really", "basicly": "basically",
    "becuase": "because", "beacuse": "because", "becasue": "because", "teh": "the",
    "thier": "their", "wich": "which", "whith": "with", "excercise": "exercise",
    "garantee": "guarantee", "independant": "independent", "persue": "pursue",
    "publically": "publicly", "sucess": "success", "succesful": "successful",
    "supprise": "surprise", "suprise": "surprise", "dissapointed": "disappointed",
    "appologize": "apologize",
    "apparantly": "apparently", "arguement": "argument", "bizzare": "bizarre",
    "collegue": "colleague", "concious": "conscious", "enviroment": "environment",
    "existance": "existence", "foward": "forward", "grammer": "grammar", "harrass": "harass",
    "immediatly": "immediately", "knowlege": "knowledge", "liason": "liaison",
    "millenium": "millennium", "mispell": "misspell", "noticable": "noticeable",
    "posession": "possession", "prefered": "preferred", "reccomend": "recommend",
    "recomend": "recommend", "refered": "referred", "rythm": "rhythm", "sieze": "seize",
    "speach": "speech", "threshhold": "threshold", "tommorrows": "tomorrow's",
    "visable": "visible", "wether": "whether", "writting": "writing", "youre": "you're",
    "theyre": "they're", "thats": "that's", "whats": "what's", "doesnt": "doesn't",
    "dont": "don't", "didnt": "didn't", "isnt": "isn't", "wasnt": "wasn't",
    "arent": "aren't", "werent": "weren't", "couldnt": "couldn't", "shouldnt": "shouldn't",
    "wouldnt": "wouldn't", "havent": "haven't", "hasnt": "hasn't", "cant": "can't",
    "im": "I'm", "ive": "I've", "youve": "you've", "theyve": "they've",
    "weve": "we've", "youll": "you'll", "theyll": "they'll", "itll": "it'll",
}  # fmt: skip
_WORD = re.compile(r"(?<![\w'.])[A-Za-z][A-Za-z']*(?![\w']|\.\w)")  # not "i.e." or "a.m."
_TWICE = re.compile(r"\b([A-Za-z]+)(?:\s+\1\b)+", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|(?<=\w\w)[.!?]\s+)([a-z])")  # not after "p.m."
# "ill" is a word, but not before a verb: "ill meet you" is "I'll meet you".
_ILL = re.compile(
    r"(?<![\w'])(?P<ill>[Ii]ll)(?=\s+(?:be|meet|see|go|call|bring|come|get|send|do|have|make|let|"
    r"take|try|text|pick|check|ask|tell|pay|book|buy|wait|leave|need|sort|drop|grab|message|"
    r"email|ring|look|think|probably|just|definitely|never|always|still|also)\b)"
)
_KEEP_TWICE = frozenset(("that", "had", "ha", "no", "very", "bye", "so", "really", "go", "la"))


def _fix_word(match: re.Match[str]) -> str:
    word = match.group(0)
    low = word.lower()
    if low == "i":
        return "I"
    fixed = _MISSPELT.get(low)
    if fixed is None:
        return word
    if word[0].isupper() and not fixed[0].isupper():
        fixed = fixed[0].upper() + fixed[1:]
    return fixed


def _fix_twice(match: re.Match[str]) -> str:
    if match.group(1).lower() in _KEEP_TWICE:
        return match.group(0)
    return match.group(1)


def correct(text: str) -> str:
    """The message with every error these rules know corrected, and nothing else changed."""
    plain = text.replace("\u2019", "'")
    fixed = _ILL.sub("I'll", _WORD.sub(_fix_word, plain))
    fixed = _TWICE.sub(_fix_twice, fixed)
    return _SENTENCE_START.sub(lambda m: m.group(0)[:-1] + m.group(1).upper(), fixed)


def errors(text: str) -> int:
    """How many of the errors these rules know the text holds."""
    plain = text.replace("\u2019", "'")
    count = sum(1 for m in _WORD.finditer(plain) if _fix_word(m) != m.group(0))
    count += len(_ILL.findall(plain))
    count += sum(1 for m in _TWICE.finditer(plain) if _fix_twice(m) != m.group(0))
    return count + len(_SENTENCE_START.findall(plain))
