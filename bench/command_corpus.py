"""Command corpus of `perceptd bench --commands` and the command matcher tests.

Written by hand for the default command vocabulary (config.yaml), none identical to a prompt:

* PARAPHRASES: (text, event) in several styles: polite, terse, indirect, colloquial;
* NEAR_MISSES: text that must issue no command: other devices (tv, fan, oven, garage door),
  other actions on the same devices (dim, open, lock, set an alarm), questions about the
  devices, mentions without intent, reports of the past, negations;
* NON_COMMANDS: everyday sentences;
* ASR_VARIANTS: (text, event) as a recognizer garbles commands: first word dropped,
  homophones, missing articles, filler words.

Each list is split in two by position: even items are the dev half (used to tune the matcher's
vocabulary and floors), odd items the held-out half (looked at only for the report).
"""

from __future__ import annotations

PARAPHRASES: tuple[tuple[str, str], ...] = (
    # lights_on
    ("could you turn the lights on please", "lights_on"),
    ("lights on please", "lights_on"),
    ("it's too dark in here", "lights_on"),
    ("switch on the lamp", "lights_on"),
    ("can you put the light on", "lights_on"),
    ("turn on the kitchen lights", "lights_on"),
    ("I can't see anything, turn the lights on", "lights_on"),
    ("would you mind switching the light on", "lights_on"),
    ("flip the lights on", "lights_on"),
    ("please turn on the lamp in the bedroom", "lights_on"),
    ("hit the lights", "lights_on"),
    ("let's have some light in here", "lights_on"),
    ("turn all the lights on", "lights_on"),
    # lights_off
    ("turn the lights off please", "lights_off"),
    ("lights off now", "lights_off"),
    ("switch off the lamp", "lights_off"),
    ("could you turn off the light", "lights_off"),
    ("shut off the lights", "lights_off"),
    ("it's too bright in here", "lights_off"),
    ("put the lights out", "lights_off"),
    ("turn the bedroom light off", "lights_off"),
    ("please switch all the lights off", "lights_off"),
    ("lamp off", "lights_off"),
    ("can you kill the lights", "lights_off"),
    ("lights out", "lights_off"),
    ("switch the light off in the hallway", "lights_off"),
    # play_music
    ("I'd like to hear some tunes", "play_music"),
    ("put some music on please", "play_music"),
    ("play my playlist", "play_music"),
    ("can you play a song for me", "play_music"),
    ("let's listen to some music", "play_music"),
    ("play some jazz", "play_music"),
    ("start the music", "play_music"),
    ("I want to hear a song", "play_music"),
    ("music on", "play_music"),
    ("could you put on some tunes", "play_music"),
    ("resume the music", "play_music"),
    ("play my favourite album", "play_music"),
    ("throw on some music", "play_music"),
    ("play the next track", "play_music"),
    # stop_music
    ("stop the song please", "stop_music"),
    ("pause the music", "stop_music"),
    ("turn off the music", "stop_music"),
    ("music off", "stop_music"),
    ("can you stop playing that song", "stop_music"),
    ("please pause the track", "stop_music"),
    ("kill the music", "stop_music"),
    ("stop the playlist", "stop_music"),
    ("switch the music off", "stop_music"),
    ("enough music for today, stop it", "stop_music"),
    ("end the music", "stop_music"),
    ("halt the music", "stop_music"),
    # volume_up
    ("turn it up", "volume_up"),
    ("volume up", "volume_up"),
    ("make it louder please", "volume_up"),
    ("could you raise the volume", "volume_up"),
    ("turn the music up", "volume_up"),
    ("louder", "volume_up"),
    ("I can't hear it, turn it up", "volume_up"),
    ("boost the volume", "volume_up"),
    ("crank up the sound", "volume_up"),
    ("turn up the volume a bit", "volume_up"),
    ("a little louder please", "volume_up"),
    ("pump up the volume", "volume_up"),
    # volume_down
    ("turn it down", "volume_down"),
    ("volume down", "volume_down"),
    ("make it quieter please", "volume_down"),
    ("could you lower the volume", "volume_down"),
    ("turn the music down", "volume_down"),
    ("quieter", "volume_down"),
    ("it's too loud, turn it down", "volume_down"),
    ("reduce the volume", "volume_down"),
    ("turn down the sound", "volume_down"),
    ("a bit softer please", "volume_down"),
    ("lower the music", "volume_down"),
    ("keep it down a little", "volume_down"),
    # start_navigation
    ("navigate to the airport", "start_navigation"),
    ("take me home", "start_navigation"),
    ("give me directions to the train station", "start_navigation"),
    ("how do I get to the hospital", "start_navigation"),
    ("drive me to work", "start_navigation"),
    ("find me a route to the city centre", "start_navigation"),
    ("start the navigation", "start_navigation"),
    ("guide me to the nearest pharmacy", "start_navigation"),
    ("navigate home", "start_navigation"),
    ("I need directions to my hotel", "start_navigation"),
    ("take me to the office", "start_navigation"),
    ("get me to the nearest charging station", "start_navigation"),
    ("route to the stadium please", "start_navigation"),
    # call_contact
    ("call my mother", "call_contact"),
    ("phone my brother", "call_contact"),
    ("ring my sister please", "call_contact"),
    ("could you call dad", "call_contact"),
    ("give mum a call", "call_contact"),
    ("dial my husband", "call_contact"),
    ("call my wife", "call_contact"),
    ("I want to call my son", "call_contact"),
    ("please phone my daughter", "call_contact"),
    ("call grandma", "call_contact"),
    ("make a call to my boss", "call_contact"),
    ("ring my dad", "call_contact"),
    ("video call my parents", "call_contact"),
    # set_temperature
    ("make it warmer in here", "set_temperature"),
    ("set the thermostat to twenty one", "set_temperature"),
    ("it's too cold in here", "set_temperature"),
    ("turn the heating up", "set_temperature"),
    ("raise the temperature", "set_temperature"),
    ("it's freezing in here", "set_temperature"),
    ("lower the temperature please", "set_temperature"),
    ("it's too hot in here", "set_temperature"),
    ("turn down the heat", "set_temperature"),
    ("set the temperature to 22 degrees", "set_temperature"),
    ("switch on the air conditioning", "set_temperature"),
    ("can you make it a bit cooler", "set_temperature"),
    ("bump up the heat", "set_temperature"),
    ("increase the temperature by two degrees", "set_temperature"),
)

NEAR_MISSES: tuple[str, ...] = (
    # other devices, same actions
    "turn on the television", "turn off the tv", "turn on the fan", "switch off the fan",
    "turn on the oven", "switch the oven off", "open the garage door", "close the garage door",
    "turn on the coffee machine", "switch on the kettle", "turn on the dishwasher",
    "start the washing machine", "turn on the computer", "switch off the computer",
    "turn the tv up", "turn down the tv", "turn up the fan", "turn down the fan",
    "play a video", "play the movie", "play a game", "play the news", "play a podcast",
    "stop the video", "pause the movie", "stop the timer", "stop the alarm",
    "turn off the alarm", "turn on the radio alarm", "set the oven to two hundred degrees",
    "preheat the oven to 180 degrees", "call a taxi", "call an uber", "call it a day",
    "start the car", "turn on the car", "lock the car", "unlock the front door",
    "open the window", "close the windows", "open the blinds", "close the curtains",
    "turn on the sprinkler", "switch on the vacuum", "start the robot vacuum",
    "turn on the shower", "turn off the tap", "turn on the wifi", "turn off bluetooth",
    "turn up the brightness of the screen", "make the screen brighter", "make the tv louder",
    "turn the fan up", "lower the blinds", "raise the blinds",
    # other actions on the command devices
    "dim the lights", "change the light colour to blue", "set an alarm for seven",
    "set a timer for ten minutes", "set a reminder to call mom", "remind me to turn off the lights",
    "text my wife", "send a message to my brother", "email my boss",
    "add this song to my playlist", "delete the playlist", "download this album",
    "what song is this", "who sings this song", "share this song",
    "save this address", "what's the address of the museum",
    # questions about the devices and commands
    "are the lights on?", "is the music playing?", "what's the temperature?",
    "how loud is the music?", "is the heating on?", "did you turn off the lights?",
    "why is it so dark in here?", "who called me?", "is the volume too high?",
    "what is the temperature outside", "how far is the airport", "where is the nearest gas station",
    "do you like this song?", "was the light on all night?",
    # mentions without intent, reports, negations
    "the music was great yesterday", "I turned off the lights before bed",
    "my mom called this morning", "the lights are on in the kitchen",
    "I love this song", "the volume on this speaker is weird", "we drove home last night",
    "she turned the heating up", "the thermostat is broken", "this lamp is really old",
    "don't turn on the lights", "do not play any music", "never call my boss",
    "I don't want music right now", "don't turn it up", "no music please",
    "the navigation app crashed", "my brother never calls", "the song ended",
    "I forgot to turn off the lights", "when I get home turn on the heating",
    "he always plays music too loud", "the temperature dropped overnight",
    "music makes me happy", "the heater makes a strange noise",
    "I bought a new lamp today", "they were playing jazz at the party",
)

NON_COMMANDS: tuple[str, ...] = (
    "what's the weather like today", "good morning", "I had pasta for lunch",
    "the meeting starts at ten", "my sister lives in another city", "how tall is the eiffel tower",
    "I like my coffee black", "tell me a joke", "what day is it today", "the cat is sleeping",
    "thank you", "see you tomorrow", "I'm going to the shop", "the train was late again",
    "can you help me with my homework", "what time is it", "I need to buy some milk",
    "the kids are at school", "let's have dinner at seven", "that was a great movie",
    "my phone battery is low", "it might rain this afternoon", "where did I leave my keys",
    "happy birthday", "I'm tired", "the dog needs a walk", "how are you doing",
    "we should paint the fence", "the package arrived", "the garden looks lovely",
    "I'll be back in five minutes", "the football match is on sunday", "excuse me",
    "nice to meet you",
)

ASR_VARIANTS: tuple[tuple[str, str], ...] = (
    # first word dropped
    ("you turn on the lights please", "lights_on"),  # "could you ..."
    ("on the lights", "lights_on"),
    ("off the lights", "lights_off"),
    ("the volume up", "volume_up"),
    ("the volume down", "volume_down"),
    ("me to the airport", "start_navigation"),  # "take me ..."
    ("you play some music", "play_music"),
    ("the music please", "stop_music"),  # "stop the music please" -> rejected is acceptable
    ("my mother", "call_contact"),  # "call my mother" -> rejected is acceptable
    ("it up please", "volume_up"),
    # homophones and misspellings
    ("turn of the lights", "lights_off"),
    ("switch of the lamp", "lights_off"),
    ("turn on the lites", "lights_on"),
    ("play sum music", "play_music"),
    ("it's to dark in here", "lights_on"),
    ("its to cold in here", "set_temperature"),
    ("turn the volume dawn", "volume_down"),
    ("call mum", "call_contact"),
    ("navigate two the station", "start_navigation"),
    ("paws the music", "stop_music"),
    # missing articles, run-ons, fillers
    ("turn on light", "lights_on"),
    ("play music", "play_music"),
    ("stop music", "stop_music"),
    ("turn up volume", "volume_up"),
    ("turn down volume", "volume_down"),
    ("um turn off the lights", "lights_off"),
    ("uh play some music", "play_music"),
    ("okay so turn the heating up", "set_temperature"),
    ("take me home please thank you", "start_navigation"),
    ("call my brother now", "call_contact"),
)

# first-word drops that cannot be recovered (no action is left): a miss there is no error
UNRECOVERABLE = frozenset({"the music please", "my mother"})


def split(items: tuple, half: str) -> tuple:
    """dev: even positions, heldout: odd positions, all: everything."""
    if half == "all":
        return items
    return items[0 if half == "dev" else 1::2]
