"""Small closed word classes the command matcher needs besides the MiniLM space.

These are English function words, not per-command vocabulary: which tokens carry no intent
(fillers), which must match exactly because the text space blurs them (particles: "on" and
"off" are close neighbours in MiniLM), and which turn a phrase into something other than a
request (questions, negation, statements, other times). Per-command words live in the event
config (`actions`, `objects`, `cues`).
"""

from __future__ import annotations

import re

# Ignored wherever they appear: articles, pronouns, politeness, modals of a request.
FILLERS = frozenset("""
a an the this that these those some any my your our his her their its
i i'd i'll i'm we we'd let's lets you you'd
please pls kindly just now right quickly quick again also then so well ok okay oh hey hi
can could would will shall might may must need want wanna like love
be a bit little lot more much very really quite all each both
and or but for of with from at by as
thanks thank one two three four five six seven eight nine ten eleven twelve
twenty thirty forty fifty sixty seventy eighty ninety hundred half
""".split())
_NUMBER = re.compile(r"^\d+([.,]\d+)?(st|nd|rd|th|°|c|f)?$")

# Meaningful function words: compared exactly (with homophone groups), never in the text space.
EXACT = frozenset("""
on off up down out in into onto over to too here there it me us him them away back
can't cannot don't not no never how do get
""".split())
# Under a statement ("the lights are on") a cue holding one of these describes, not asks.
PARTICLES = frozenset({"on", "off", "up", "down", "out"})
HOMOPHONES = {"too": "to", "two": "to", "thee": "the", "u": "you", "dont": "don't", "cant": "can't",
              "im": "i'm", "id": "i'd", "its": "it's", "whats": "what's", "lite": "light",
              "lites": "lights", "dawn": "down"}

# "turn of the lights" (a recognizer's homophone): "of" after these verbs is "off".
OFF_AFTER = frozenset({"turn", "turns", "switch", "shut", "lights", "light", "lamp", "it", "music", "them"})

# Sentence openers and words that make the phrase a question, a negation, a statement about
# the past or the future, a condition or a report about someone else: not a request now.
QUESTION_START = frozenset("""
is are was were am do does did has have had isn't aren't wasn't weren't don't doesn't didn't
what what's why when where who whose which how how's should shouldn't
""".split())
POLITE_START = frozenset({"can", "could", "would", "will", "won't", "please", "kindly", "hey"})
NEGATION = frozenset({"not", "don't", "never", "no", "can't", "cannot", "won't", "didn't", "doesn't",
                      "shouldn't", "wouldn't", "isn't", "aren't", "wasn't", "nothing", "nobody"})
COPULA = frozenset({"is", "are", "was", "were", "been", "being", "it's", "that's", "there's", "here's",
                    "he's", "she's", "they're", "what's", "who's", "where's", "isn't", "aren't",
                    "wasn't", "weren't", "am", "i'm", "seems", "looks", "sounds", "feels"})
OTHER_TIME = frozenset({"yesterday", "earlier", "ago", "already", "last", "tomorrow", "later",
                        "tonight", "if", "when", "whenever", "until", "after", "before", "once",
                        "every", "always", "usually", "sometimes", "forgot", "forget", "remember",
                        "remind", "reminder", "schedule",
                        # irregular past tenses of the default actions ("-ed" ones are caught by form)
                        "rang", "took", "drove", "left", "heard"})
OTHER_SUBJECT = frozenset({"he", "she", "they", "someone", "somebody", "everyone", "everybody",
                           "nobody", "who", "people"})

# Things the default commands do not act on. A token close to one of these (in the text space)
# that the candidate command's own words do not explain vetoes it: "set the oven to 200 degrees"
# is not a temperature command, "turn on the tv" not a lights command.
OTHER_THINGS = tuple("""
tv television telly screen monitor display computer laptop tablet printer camera fan
oven stove microwave fridge freezer dishwasher washer dryer kettle toaster coffee
garage door doors gate window windows blinds curtains shades lock car engine trunk
alarm timer clock reminder video movie film show series episode game podcast audiobook
news weather email message text taxi cab pizza dinner vacuum robot sprinkler shower tap
water bath pool boiler wifi router internet bluetooth app
""".split())
