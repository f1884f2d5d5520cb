"""English sentence templates of the spoken documents.

Fact templates are ``(template_id, text, asks_owner)``; ids ``<kind>/0``–``/3`` are *seen* (train, val,
in-domain test), ``/4``–``/5`` are *unseen* (only in ``test_unseen``). ``asks_owner``: the sentence
addresses the action's owner, who answers with a short agreement. Every fact template contains each
slot that is one of the fact's keys verbatim, so the keys occur in what is spoken. Slots:
person {name} {role} {topic}; decision {verb} {obj}; number {measure} {value} {unit};
date {event} {date}; place {event} {city}; action {first} {action} {day}.
"""

from __future__ import annotations

FACTS: dict[str, list[tuple[str, str, bool]]] = {
    "person": [
        ("person/0", "By the way, {name} is the new {role} for {topic}.", False),
        ("person/1", "Please welcome {name}, who is our new {role}.", False),
        ("person/2", "From next week on, {name} will be the new {role}.", False),
        ("person/3", "I'm happy to say that {name} agreed to be the {role}.", False),
        ("person/4", "Quick announcement: the {role} job goes to {name}, starting now.", False),
        ("person/5", "We finally found our {role}, and it is {name}.", False),
    ],
    "decision": [
        ("decision/0", "So we have decided to {verb} the {obj}.", False),
        ("decision/1", "Okay, final decision: we {verb} the {obj}.", False),
        ("decision/2", "After some discussion, I think we should {verb} the {obj}, and everyone agrees.", False),
        ("decision/3", "Let's {verb} the {obj}. That's decided.", False),
        ("decision/4", "Everyone is on board, so the {obj} is something we will {verb}.", False),
        ("decision/5", "My call is to {verb} the {obj}, and I heard no objections.", False),
    ],
    "number": [
        ("number/0", "The {measure} is {value} {unit}.", False),
        ("number/1", "Just so everyone knows, the {measure} will be {value} {unit}.", False),
        ("number/2", "We agreed on a {measure} of {value} {unit}.", False),
        ("number/3", "Right now the {measure} comes to {value} {unit}.", False),
        ("number/4", "Write this down: {value} {unit} is the {measure}.", False),
        ("number/5", "For the {measure}, we are looking at {value} {unit}.", False),
    ],
    "date": [
        ("date/0", "The {event} is on {date}.", False),
        ("date/1", "We moved the {event} to {date}.", False),
        ("date/2", "Mark your calendars, the {event} happens on {date}.", False),
        ("date/3", "The {event} is scheduled for {date}.", False),
        ("date/4", "{date} is the day of the {event}.", False),
        ("date/5", "Don't forget, we hold the {event} on {date}.", False),
    ],
    "place": [
        ("place/0", "The {event} will take place in {city}.", False),
        ("place/1", "We are holding the {event} in {city} this time.", False),
        ("place/2", "The {event} is going to be in {city}.", False),
        ("place/3", "For the {event} we booked a place in {city}.", False),
        ("place/4", "{city} is where the {event} will be.", False),
        ("place/5", "Pack your bags, the {event} moves to {city}.", False),
    ],
    "action": [
        ("action/0", "{first}, can you {action} by {day}?", True),
        ("action/1", "Action item: {first} will {action} by {day}.", False),
        ("action/2", "{first} is going to {action} by {day}.", False),
        ("action/3", "And {first}, please {action} by {day}.", True),
        ("action/4", "By {day}, {first} needs to {action}.", False),
        ("action/5", "{first} promised to {action} before the end of {day}.", False),
    ],
}
SEEN_IDS = {"0", "1", "2", "3"}

OPENINGS = {
    "meeting": [
        "Good morning everyone, let's start the meeting about {topic}.",
        "Hi all, thanks for joining. Today we talk about {topic}.",
        "Okay, let's begin. This meeting is about {topic}.",
        "Alright, we have a lot to cover on {topic}, so let's dive in.",
    ],
    "lecture": [
        "Welcome back everyone. Today's lecture is about {topic}.",
        "Good afternoon. In this session we look at {topic}.",
        "Hello class. Let's continue with {topic} today.",
        "Okay, settle down please. Our subject today is {topic}.",
    ],
    "interview": [
        "Hello and welcome to the show. Today we talk about {topic}.",
        "Welcome to another episode. Our topic today is {topic}.",
        "Hi listeners, great to have you back. This week it's all about {topic}.",
        "Welcome to the podcast. I'm really excited to talk about {topic} today.",
    ],
    "call": [
        "Hello, thanks for calling. I understand this is about {topic}.",
        "Hi, I'm returning your call about {topic}.",
        "Good morning, you reached the service desk. This is about {topic}, right?",
        "Hey, sorry I missed you earlier. You left a message about {topic}.",
    ],
}
INTROS = [
    "Hi, this is {name}.",
    "Hello everyone, {name} here.",
    "Hi, I'm {name}.",
    "{name} speaking, hello.",
    "Hey, it's {name}, good to be here.",
    "Hello, my name is {name}.",
]
CHITCHAT = [  # (question, answer); slots: {city} {pet} {food} {hobby} {number}
    ("How was your weekend?", "Pretty good, I went {hobby} near {city}."),
    ("Can everyone hear me okay?", "Yes, loud and clear."),
    ("Did anyone try the new {food} place?", "Yes, it was great, but about {number} people were in line."),
    ("Sorry, is that your dog in the background?", "Yes, that's {pet}, he wants to go for a walk."),
    ("Is it raining where you are?", "No, it's actually sunny here in {city}."),
    ("How was your trip?", "Long. The train was {number} minutes late."),
    ("Did you have lunch already?", "Yes, way too much {food}."),
    ("Sorry, I'm a bit late, the traffic was terrible.", "No worries, we just started."),
]
ACKS = ["Sounds good.", "Okay, noted.", "Great, thanks.", "Makes sense to me.", "Right.", "Perfect.",
        "Good to know.", "Okay."]
DECIDER_ACKS = ["Good call, {name}.", "Agreed, {name}.", "Thanks, {name}, that settles it.", "Fine by me, {name}."]
AGREES = ["Sure, I can do that.", "Yes, no problem.", "Okay, will do.", "Sure, I'll take care of it."]
CLOSINGS = {
    "meeting": ["Great, that's all for today. Thanks everyone.", "Okay, let's wrap up here. Thanks, all.",
                "Thanks everyone, see you next week."],
    "lecture": ["That's it for today. See you next week.", "Okay, let's stop here. Thanks for listening.",
                "Good questions today. See you on the next lecture."],
    "interview": ["Thanks so much for coming on the show.", "That's all for this episode. Thanks for listening.",
                  "Thank you, this was a great conversation."],
    "call": ["Thanks for your help, goodbye.", "Okay, thank you. Bye for now.", "Great, have a nice day. Bye."],
}
