"""Neutral sentences: the text background against which every event is calibrated.

A raw cosine threshold does not transfer between events (some prompts sit close to
everything); standardising against what ordinary, unrelated speech looks like does.
"""

BACKGROUND_SENTENCES = [
    "what time is it", "I had pasta for lunch today", "the meeting starts at ten",
    "can you tell me a joke", "my sister lives in another city", "it might rain tomorrow",
    "how tall is the eiffel tower", "I forgot my umbrella at work", "remind me to call mom",
    "the train was late again", "what's the weather like", "I need to buy some milk",
    "how do you spell necessary", "the cat sleeps on the sofa all day", "set a timer for five minutes",
    "this book is really interesting", "we should paint the fence", "how many days until friday",
    "the football match ended in a draw", "I like my coffee black", "where did I put my keys",
    "the report is due next week", "tell me about the history of rome", "add eggs to the shopping list",
    "the garden needs watering", "what is the capital of australia", "my phone battery is low",
    "let's have dinner at seven", "the kids are doing their homework", "how far is the moon",
    "spell the word banana", "I am tired today", "the printer is out of paper",
    "what does this word mean", "thank you very much", "good morning", "never mind",
    "that is a good idea", "I'm not sure about that", "okay", "yes please", "no thanks",
    "the weather is nice outside", "the car needs new tyres", "call the dentist on monday",
    "how old is the universe", "the soup is too salty", "we are out of bread",
    "open the window a little", "close the curtains", "what's on the calendar today",
    "the neighbours are on holiday", "a bird is sitting on the roof", "my favourite colour is blue",
    "send a message to john", "how much does it cost", "the package arrived yesterday",
    "please speak more slowly", "lock the front door", "water the plants",
]
