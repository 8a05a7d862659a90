"""The guard: refuse a semantic hit when two questions differ in a way that changes the answer.

Sentence embeddings put "How do I sort a list ascending?" and "... descending?" a few hundredths
apart. The guard compares what the embedding blurs, with general rules over the two texts'
tokens: negation, numbers, dates and times, units, named entities and identifiers, antonyms,
comparatives and superlatives, scope words, and which argument each directional preposition
governs ("celsius to fahrenheit" vs "fahrenheit to celsius"). Open-class knowledge (known words,
proper nouns, antonym pairs) comes from WordNet through `Lexicon`; the closed classes below are
English grammar (quantifiers, negators, month names), not a list of expected questions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from tiergate.cache.lexicon import Lexicon

# ---------------------------------------------------------------- closed word classes


def _words(text: str) -> list[str]:
    return text.split()


NEGATORS = frozenset({
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "nowhere", "without", "cannot",
    "hardly", "barely",
})
# Verbs that say "not" ("foods to avoid" = foods not to eat).
NEGATIVE_VERBS = frozenset({"avoid", "prevent"})
STOPWORDS = frozenset(_words("""
    a an the and or but if then so of in on at by for with to from into onto about as is are was
    were be been being am do does did doing have has had having i me my mine we us our you your
    yours he him his she her it its they them their this that these those there here what which who
    whom whose when where why how can could should would will shall may might must please tell
    explain show give need want know get make let just really very also too way ways thing things
    something anything someone anyone kind sort type correct proper properly best good simple simply
    easy easily quick quickly possible possibly help like use using used mean means meaning does
    doing done go going one ones s t much many some any vs versus
"""))
# Scope: quantifiers and restrictors that change which things the answer covers.
SCOPE = frozenset({
    "all", "every", "each", "only", "both", "either", "entire", "whole", "few", "several", "single",
    "multiple", "except", "excluding", "including", "exactly", "approximately", "average", "total", "per",
    "mostly", "partly", "partially", "fully", "completely", "recursively", "individually", "together",
    "separately", "first", "last", "minimum", "maximum", "min", "max",
})
DETERMINERS = frozenset({"a", "an", "the", "my", "your", "his", "her", "its", "our", "their", "this", "that",
                         "these", "those", "some", "any", "each", "every", "no"})
# Words that frame a request rather than say what it is about ("the command to ...", "tips for ...").
FRAMES = frozenset({"command", "commands", "tip", "tips", "idea", "ideas", "step", "steps", "advice", "suggestion",
                    "suggestions", "instruction", "instructions", "method", "methods", "approach", "option", "options"})
GRADE_WORDS = frozenset({"more", "most", "less", "least", "fewer", "fewest"})
# Before a verb form, these say it is used as a verb ("penguins live in", "I want to stay").
VERB_CUES = frozenset({"i", "you", "we", "they", "he", "she", "it", "do", "does", "did", "can", "could", "will",
                       "would", "should", "must", "may", "might", "to"})
AUXILIARIES = frozenset({"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "get", "got"})
PARTICLES = frozenset({"up", "down", "out", "off", "away", "back"})
AUXILIARY_LEMMAS = frozenset({"be", "have", "do", "doe", "get"})
# Universal quantifiers: on one side only, they say what the other side means anyway.
UNIVERSAL = frozenset({"all", "every", "each", "entire", "whole", "total", "fully", "completely"})
# Closed-class opposites that WordNet does not list as antonyms.
OPPOSITES = [
    ("before", "after"), ("above", "below"), ("over", "under"), ("up", "down"), ("in", "out"),
    ("inside", "outside"), ("min", "max"), ("minimum", "maximum"), ("first", "last"), ("more", "less"),
    ("more", "fewer"), ("most", "least"), ("with", "without"), ("always", "never"), ("increase", "decrease"),
    ("add", "remove"), ("add", "delete"), ("add", "subtract"), ("encode", "decode"), ("encrypt", "decrypt"),
    ("serialize", "deserialize"), ("push", "pull"), ("upper", "lower"), ("uppercase", "lowercase"),
    ("ascending", "descending"), ("earliest", "latest"), ("oldest", "newest"), ("left", "right"),
    ("top", "bottom"), ("front", "back"), ("true", "false"), ("yes", "no"), ("on", "off"), ("start", "end"),
    ("begin", "end"), ("open", "close"), ("show", "hide"), ("lock", "unlock"), ("allow", "deny"),
    ("accept", "reject"), ("import", "export"), ("inbound", "outbound"), ("input", "output"),
    ("read", "write"), ("send", "receive"), ("upload", "download"), ("zip", "unzip"), ("install", "uninstall"),
    ("enable", "disable"), ("rise", "fall"), ("gain", "lose"), ("north", "south"), ("east", "west"),
    ("pros", "cons"), ("advantage", "disadvantage"), ("benefit", "risk"), ("cause", "effect"),
    ("maximize", "minimize"), ("overestimate", "underestimate"), ("prefix", "suffix"), ("head", "tail"),
    ("sunrise", "sunset"), ("near", "far"), ("close", "far"), ("nearest", "farthest"),
    ("closest", "farthest"), ("male", "female"), ("boil", "freeze"), ("melt", "freeze"),
    ("borrow", "lend"),
]
OPPOSING_PREFIXES = [("in", "out"), ("up", "down"), ("over", "under"), ("en", "de"), ("im", "ex"),
                     ("inc", "dec"), ("pre", "post"), ("max", "min"), ("", "un"), ("", "in"), ("", "im"),
                     ("", "il"), ("", "ir"), ("", "dis"), ("", "non"), ("", "anti"), ("", "de")]
# Directional prepositions: which argument they govern matters ("X to Y" != "Y to X").
DIRECTIONAL = {"to": "to", "into": "to", "onto": "to", "toward": "to", "towards": "to", "from": "from",
               "than": "than", "per": "per", "versus": "vs", "vs": "vs", "of": "of", "in": "in"}
RESTRICTIVE = frozenset({"for", "with", "without", "in", "on", "by", "of", "from", "to", "at", "under", "over",
                         "during", "after", "before", "except", "per", "within", "between", "among"})
IRREGULAR_GRADE = {
    "better": ("good", "cmp"), "best": ("good", "sup"), "worse": ("bad", "cmp"), "worst": ("bad", "sup"),
    "more": ("much", "cmp"), "most": ("much", "sup"), "less": ("little", "cmp"), "least": ("little", "sup"),
    "fewer": ("few", "cmp"), "fewest": ("few", "sup"), "further": ("far", "cmp"), "farther": ("far", "cmp"),
    "furthest": ("far", "sup"), "farthest": ("far", "sup"), "elder": ("old", "cmp"), "eldest": ("old", "sup"),
}
NUMBER_WORDS = {
    w: i for i, w in enumerate(
        _words("""
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty
""")
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
     "dozen": 12, "pair": 2, "half": 0.5, "quarter": 0.25, "twice": 2, "double": 2, "triple": 3, "once": 1}
MULTIPLIERS = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
ORDINALS = {
    w: i + 1 for i, w in enumerate(
        _words("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth")
    )
}
MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4, "may": 5,
    "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9, "sep": 9, "sept": 9,
    "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
}
WEEKDAYS = {d: d for d in ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]} | {
    "mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday", "thu": "thursday",
    "thur": "thursday", "thurs": "thursday", "fri": "friday", "sat": "saturday", "sun": "sunday",
}
# Words that all mean "as of now": interchangeable in a question ("current price" = "price now").
NOW = frozenset({"now", "currently", "current", "latest", "recent", "recently", "today", "present", "presently",
                 "nowadays", "moment"})
RELATIVE_TIME = frozenset({
    "tonight", "tomorrow", "yesterday", "ago", "upcoming", "soon", "morning", "afternoon", "evening", "night",
    "midnight", "noon",
    "weekend", "spring", "summer", "autumn", "fall", "winter", "am", "pm", "past", "future", "previous",
    "next", "last", "this", "century", "decade", "bc", "ad",
})
DATED = frozenset({
    "second", "minute", "hour", "day", "week", "month", "year", "quarter", "season", "weekend", "morning",
    "afternoon", "evening", "night", "spring", "summer", "autumn", "fall", "winter", "semester", "decade",
    "century", "time",
})
MANNER = frozenset({"way", "ways", "method", "methods", "approach", "option", "options", "solution"})
PERIODS = frozenset({"second", "minute", "hour", "day", "week", "month", "year", "quarter", "season"})
# Units and currencies: canonical name per spelling.
_UNITS = {
    "m": "meter", "meter": "meter", "metre": "meter", "km": "kilometer", "kilometer": "kilometer",
    "kilometre": "kilometer", "cm": "centimeter", "centimeter": "centimeter", "mm": "millimeter",
    "millimeter": "millimeter", "nm": "nanometer", "mile": "mile", "mi": "mile", "yard": "yard", "yd": "yard",
    "foot": "foot", "feet": "foot", "ft": "foot", "inch": "inch", "inches": "inch", "in.": "inch",
    "kg": "kilogram", "kilogram": "kilogram", "kilo": "kilogram", "g": "gram", "gram": "gram", "mg": "milligram",
    "milligram": "milligram", "lb": "pound", "lbs": "pound", "pound": "pound", "oz": "ounce", "ounce": "ounce",
    "ton": "ton", "tonne": "tonne", "stone": "stone",
    "l": "liter", "liter": "liter", "litre": "liter", "ml": "milliliter", "milliliter": "milliliter",
    "gallon": "gallon", "gal": "gallon", "quart": "quart", "pint": "pint", "cup": "cup", "tablespoon": "tbsp",
    "tbsp": "tbsp", "teaspoon": "tsp", "tsp": "tsp",
    "celsius": "celsius", "°c": "celsius", "centigrade": "celsius", "fahrenheit": "fahrenheit",
    "°f": "fahrenheit", "kelvin": "kelvin", "degree": "degree", "radian": "radian",
    "second": "second", "sec": "second", "s": "second", "ms": "millisecond", "millisecond": "millisecond",
    "microsecond": "microsecond", "nanosecond": "nanosecond", "minute": "minute", "min": "minute",
    "hour": "hour", "hr": "hour", "h": "hour", "day": "day", "week": "week", "month": "month", "year": "year",
    "decade": "decade", "century": "century",
    "bit": "bit", "byte": "byte", "kb": "kilobyte", "kilobyte": "kilobyte", "mb": "megabyte",
    "megabyte": "megabyte", "gb": "gigabyte", "gigabyte": "gigabyte", "tb": "terabyte", "terabyte": "terabyte",
    "kib": "kibibyte", "mib": "mebibyte", "gib": "gibibyte", "mbps": "mbps", "gbps": "gbps",
    "hz": "hertz", "hertz": "hertz", "khz": "kilohertz", "mhz": "megahertz", "ghz": "gigahertz",
    "mph": "mph", "kph": "kph", "km/h": "kph", "knot": "knot",
    "watt": "watt", "w": "watt", "kw": "kilowatt", "kilowatt": "kilowatt", "kwh": "kwh", "volt": "volt",
    "v": "volt", "amp": "ampere", "ampere": "ampere", "joule": "joule", "calorie": "calorie", "kcal": "calorie",
    "psi": "psi", "bar": "bar", "pascal": "pascal", "atm": "atmosphere", "acre": "acre", "hectare": "hectare",
    "percent": "percent", "%": "percent", "percentage": "percent",
    "$": "usd", "usd": "usd", "dollar": "usd", "buck": "usd", "€": "eur", "eur": "eur", "euro": "eur",
    "£": "gbp", "gbp": "gbp", "sterling": "gbp", "¥": "yen", "yen": "yen", "jpy": "yen", "yuan": "cny",
    "rmb": "cny", "cny": "cny", "rupee": "inr", "inr": "inr", "₹": "inr", "franc": "chf", "chf": "chf",
    "peso": "peso", "won": "krw", "ruble": "rub", "bitcoin": "btc", "btc": "btc", "eth": "eth", "cent": "cent",
}

_TOKEN_RE = re.compile(
    r"[$€£¥₹%]"
    r"|°[cCfF]\b"
    r"|\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|s)?(?=[a-zA-Z%°]|\b|$)"
    r"|[A-Za-z][A-Za-z0-9]*(?:[.+#_/]?[A-Za-z0-9+#]+)*(?:\+\+|#)?"
    r"|(?<=[\s\dA-Za-z)])[+*/^=<>](?=[\s\dA-Za-z(])|(?<=\s)-(?=\s)"
)
OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", "^": "^", "=": "=", "<": "<", ">": ">", "plus": "+",
             "minus": "-", "squared": "^", "cubed": "^"}
_CONTRACTIONS = {"n't": "not", "can't": "can not", "won't": "will not", "cannot": "can not", "'s": ""}


@dataclass(frozen=True)
class Token:
    text: str  # lower-cased
    raw: str
    start: bool  # first word of a sentence


def tokenize(text: str) -> list[Token]:
    """Words, numbers, symbols; contractions expanded ("isn't" -> "is", "not")."""
    text = text.replace("’", "'").replace("‘", "'")
    text = re.sub(r"(?i)\b(can)'t\b", r"\1 not", text)
    text = re.sub(r"(?i)\bwon't\b", "will not", text)
    text = re.sub(r"(?i)n't\b", " not", text)
    text = re.sub(r"(?i)\bcannot\b", "can not", text)
    text = re.sub(r"(?i)'(s|re|ve|ll|d|m)\b", "", text)
    out: list[Token] = []
    start = True
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        gap = text[pos:m.start()]
        if any(ch in gap for ch in ".?!\n:;"):
            start = True
        raw = m.group(0)
        out.append(Token(raw.lower(), raw, start))
        start = False
        pos = m.end()
    return out


# ---------------------------------------------------------------- features


@dataclass
class Features:
    negations: int = 0
    numbers: Counter = field(default_factory=Counter)
    operators: Counter = field(default_factory=Counter)
    dates: Counter = field(default_factory=Counter)
    units: Counter = field(default_factory=Counter)
    entities: set[str] = field(default_factory=set)
    grades: Counter = field(default_factory=Counter)
    grade_bases: set[str] = field(default_factory=set)
    scope: Counter = field(default_factory=Counter)
    roles: set[tuple[str, str]] = field(default_factory=set)
    content: set[str] = field(default_factory=set)  # lemmas of content words
    words: set[str] = field(default_factory=set)  # lemmas of all words
    tokens: set[str] = field(default_factory=set)  # lemmas of words, and numbers as written
    governed: set[str] = field(default_factory=set)  # content lemmas right after a preposition
    forms: dict[str, set[str]] = field(default_factory=dict)  # lemma -> the forms it came from
    weak: set[str] = field(default_factory=set)  # entities written as a common or unknown lower-case word
    attributive: set[str] = field(default_factory=set)  # content lemmas right before another content word
    modifies: dict[str, str] = field(default_factory=dict)  # attributive lemma -> the word after it
    compound: dict[str, str] = field(default_factory=dict)  # content noun -> the noun right before it
    after_noun: dict[str, str] = field(default_factory=dict)  # content lemma -> the noun right before it
    noun_uses: set[str] = field(default_factory=set)  # content lemmas right after a determiner or preposition
    verb_uses: set[str] = field(default_factory=set)  # content lemmas written as an inflected verb


class Guard:
    """Compares two questions; `check(a, b)` returns None when they ask the same thing, else a reason."""

    def __init__(self, lexicon: Lexicon, vocabulary: set[str] | None = None) -> None:
        """`vocabulary`: extra known words, e.g. the whole-word tokens of the embedder's tokenizer
        (they cover function words and inflections WordNet does not list: "whether", "wrote")."""
        self.lex = lexicon
        self.vocabulary = vocabulary or set()
        self._opposites: dict[str, set[str]] = {}
        for a, b in OPPOSITES:
            self._opposites.setdefault(a, set()).add(b)
            self._opposites.setdefault(b, set()).add(a)
        self.features = lru_cache(maxsize=8192)(self._features)

    # ---- words

    def lemma(self, w: str) -> str:
        """A light lemmatiser: the first known base form (plural, -ing, -ed, -er, -est)."""
        if w in IRREGULAR_GRADE:
            return IRREGULAR_GRADE[w][0]
        if w in self.lex.irregular and w not in self.lex.words:
            return self.lex.irregular[w]  # wrote -> write (but "left", "found" are words too: see _features)
        known = self.lex.words
        for suffix, repl in (("ies", "y"), ("ied", "y"), ("iest", "y"), ("ier", "y"), ("s", ""), ("es", ""),
                             ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("est", ""), ("est", "e"),
                             ("er", ""), ("er", "e")):
            if w.endswith(suffix) and len(w) - len(suffix) >= 2:
                base = w[: len(w) - len(suffix)] + repl
                if len(base) > 3 and base[-1] == base[-2] and base[-1] not in "aeiouls" and base[:-1] in known:
                    base = base[:-1]  # bigger -> big, running -> run
                graded = suffix in ("er", "est", "ier", "iest")
                if graded and not self._comparative_form(w):
                    continue
                if base in known and (w not in known or suffix in ("s", "es", "ies") or self._gradable(base)):
                    return base
        return w

    def _comparative_form(self, w: str) -> bool:
        """-er/-est words that WordNet lists as nouns or verbs ("number", "leader") are not grades."""
        return w not in self.lex.words or w in self.lex.adjectives

    def _gradable_word(self, w: str) -> bool:
        return w in self.lex.adjectives and w not in self.lex.nouns and w not in ("much", "many")

    def _base_adjective(self, w: str) -> str:
        """"quickly" -> "quick": the adjective an adverb is made from, when there is one."""
        for suffix, repl in (("ily", "y"), ("ally", "al"), ("ly", "")):
            base = w[: -len(suffix)] + repl if w.endswith(suffix) else ""
            if base and base in self.lex.adjectives:
                return base
        return w

    def _gradable(self, base: str) -> bool:
        return base in self.lex.adjectives and bool(self.lex.antonyms.get(base))

    def grade(self, w: str) -> tuple[str, str] | None:
        """('fast', 'cmp') for "faster", ('large', 'sup') for "largest", else None."""
        if w in IRREGULAR_GRADE:
            return IRREGULAR_GRADE[w]
        if not self._comparative_form(w):
            return None
        for suffix, repl, kind in (("iest", "y", "sup"), ("ier", "y", "cmp"), ("est", "", "sup"),
                                   ("est", "e", "sup"), ("er", "", "cmp"), ("er", "e", "cmp")):
            if w.endswith(suffix) and len(w) - len(suffix) >= 2:
                base = w[: len(w) - len(suffix)] + repl
                if len(base) > 3 and base[-1] == base[-2] and base[:-1] in self.lex.antonyms:
                    base = base[:-1]
                if self._gradable(base):
                    return base, kind
        return None

    def _entity_like(self, tok: Token, mostly_capitalised: bool) -> bool:
        raw, w = tok.raw, tok.text
        if any(ch.isdigit() for ch in raw) and any(ch.isalpha() for ch in raw):
            return True  # python3, gpt-4, es2015, h100
        if any(ch in raw for ch in ".+#_/") and any(ch.isalpha() for ch in raw):
            return True  # node.js, c++, c#, snake_case
        if len(raw) > 1 and raw.isupper():
            return True  # NASA, SQL
        if any(ch.isupper() for ch in raw[1:]):
            return True  # camelCase, PyTorch, iPhone
        if w in self.lex.proper and w not in STOPWORDS and len(w) >= 2:
            return True
        if raw[0].isupper() and not tok.start and not mostly_capitalised and w != "i":
            return w not in STOPWORDS or w in self.lex.proper
        if len(raw) == 1 and raw.isupper() and raw not in "IA":
            return True  # C, R
        if w.isalpha() and len(w) >= 3 and not self._known(w):
            return w not in STOPWORDS  # unknown word: an identifier or a name (numpy, kubernetes)
        return False

    def _known(self, w: str) -> bool:
        if w in self.vocabulary or self.lex.known(w) or self.lex.known(self.lemma(w)):
            return True
        for suffix in ("ally", "ly"):  # botanically -> botanical, quickly -> quick
            if w.endswith(suffix) and (self.lex.known(w[: -len(suffix)]) or self.lex.known(w[:-2])):
                return True
        return False

    def _features(self, text: str) -> Features:
        toks = tokenize(text)
        f = Features()
        words = [t for t in toks if t.raw[0].isalpha()]
        caps = sum(1 for t in words if t.raw[0].isupper())
        mostly_capitalised = len(words) >= 4 and caps / len(words) > 0.6
        n = len(toks)
        i = 0
        consumed: set[int] = set()
        # Multi-word proper nouns ("new york", "united states").
        for size in range(self.lex.max_proper_words, 1, -1):
            for j in range(n - size + 1):
                if any(k in consumed for k in range(j, j + size)):
                    continue
                span = toks[j: j + size]
                phrase = " ".join(t.text for t in span)
                # "long beach" inside "week-long beach" is not the city: a lower-case phrase of
                # common words names something only when capitalised.
                named = any(t.raw[0].isupper() and not t.start for t in span) or any(
                    t.text not in self.lex.words for t in span
                )
                if phrase in self.lex.proper and named:
                    f.entities.add(phrase)
                    consumed.update(range(j, j + size))
        while i < n:
            tok = toks[i]
            w = tok.text
            if i in consumed:
                i += 1
                continue
            if w in OPERATORS:
                f.operators[OPERATORS[w]] += 1
                if w in ("squared", "cubed"):
                    f.numbers["2" if w == "squared" else "3"] += 1
            if w in NEGATORS or self.lemma(w) in NEGATIVE_VERBS or (
                    w == "no" and i + 1 < n and toks[i + 1].text == "longer"):
                f.negations += 1
            # numbers: digits (with a glued unit), number words, ordinals
            m = re.fullmatch(r"(\d+(?:[.,]\d+)*)(st|nd|rd|th|s)?", w)
            if m:
                value = m.group(1).replace(",", "")
                if ":" not in w:
                    f.numbers[("ord:" if m.group(2) in ("st", "nd", "rd", "th") else "") + _num(value)] += 1
                if m.group(2) == "s":
                    f.dates["decade"] += 1
                if len(value) == 4 and value.isdigit():
                    f.dates["year:" + value] += 1
            elif re.fullmatch(r"\d+(?::\d+)+|\d+/\d+(?:/\d+)?", w):
                f.numbers[w] += 1
            elif w == "one" and not (i + 1 < n and toks[i + 1].text in MULTIPLIERS):
                pass  # "one" is mostly a determiner or pronoun ("which one", "one banana")
            elif w in NUMBER_WORDS or w in MULTIPLIERS:
                value, i = self._number_words(toks, i)
                f.numbers[_num(str(value))] += 1
                continue
            elif w in ORDINALS and not (w in ("first", "last") and i + 1 < n and toks[i + 1].text == "time"):
                f.numbers[f"ord:{ORDINALS[w]}"] += 1
            if w in MONTHS and (w != "may" or tok.raw[0] == "M") and (len(w) > 3 or tok.raw[0].isupper()):
                f.dates[f"month:{MONTHS[w]}"] += 1
            elif w in WEEKDAYS and (len(w) > 3 or _dated_context(toks, i)):
                f.dates[WEEKDAYS[w]] += 1
            elif w in NOW:
                f.dates["now"] = 1
            elif w in RELATIVE_TIME and w not in ("last", "next", "this", "past", "fall"):
                f.dates[w] = 1
            elif w in ("last", "next", "this", "past", "previous", "coming") and i + 1 < n:
                nxt = self.lemma(toks[i + 1].text)
                if nxt in DATED or toks[i + 1].text in WEEKDAYS or toks[i + 1].text in MONTHS:
                    f.dates[f"{w}:{nxt}"] = 1
            unit = _UNITS.get(w) or _UNITS.get(self.lemma(w))
            counted = len(w) > 2 or tok.raw in "$€£¥₹%" or _after_number(toks, i)
            if unit in PERIODS and not _quantified(toks, i):
                unit = None  # "what year did ..." asks when; "how many days", "3 weeks", "week-long" measure
            scale_word = unit == "degree" and any(
                t.text in ("celsius", "fahrenheit", "kelvin", "centigrade", "°c", "°f") for t in toks)
            if unit and counted and not scale_word:  # "degrees Celsius" = "Celsius"
                f.units[unit] += 1
            if w in SCOPE:
                f.scope[w] += 1
            g = self.grade(w) if w not in STOPWORDS else None
            if w in ("more", "most", "less", "least") and i + 1 < n and self._gradable_word(toks[i + 1].text):
                g = (self._base_adjective(toks[i + 1].text), IRREGULAR_GRADE[w][1])
            nxt_text = toks[i + 1].text if i + 1 < n else ""
            ranked = w in ("top", "bottom") and (nxt_text[:1].isdigit() or nxt_text in NUMBER_WORDS)
            if ranked:
                g = ("high" if w == "top" else "low", "sup")  # "the top 5 customers" = "the 5 highest"
            if g is not None and g[1] == "sup" and i + 1 < n and toks[i + 1].text in MANNER:
                g = None  # "the fastest way to ...": a request for a method, not a comparison
            if g is not None:
                f.grades[g[1]] += 1
                f.grade_bases.add(g[0])
            if w in RESTRICTIVE and i + 1 < n:
                nxt = next((t for t in toks[i + 1:] if t.text not in STOPWORDS or t.text in SCOPE), None)
                if nxt is not None and nxt.text.isalpha():
                    f.governed.add(self.lemma(nxt.text))
            if w in DIRECTIONAL and i + 1 < n:
                nxt = next((t for t in toks[i + 1:] if t.text not in STOPWORDS), None)
                if nxt is not None:
                    f.roles.add((DIRECTIONAL[w], self.lemma(nxt.text) if nxt.text.isalpha() else nxt.text))
            if tok.raw[0].isalpha() and not (len(w) > 1 and w in _UNITS) and self._entity_like(tok, mostly_capitalised):
                name = self.lemma(w) if w.isalpha() else w
                f.entities.add(name)
                if tok.raw.islower() and w.isalpha() and (w in self.lex.words or not self._known(w)):
                    f.weak.add(name)  # "python", "factor", "dedupe": a name or a plain word
            f.tokens.add(self.lemma(w) if w.isalpha() else w)
            if w.isalpha():
                lem = self.lemma(w)
                if w in self.lex.irregular and i > 0 and toks[i - 1].text in AUXILIARIES:
                    lem = self.lex.irregular[w]  # "was torn", "has made": the verb, not the adjective
                f.words.add(lem)
                f.forms.setdefault(lem, set()).add(w)
                temporal = w in NOW or w in RELATIVE_TIME or w in MONTHS or w in WEEKDAYS or (
                    w == "right" and i + 1 < n and toks[i + 1].text == "now")
                if w == "fall" and not _season(toks, i):
                    temporal = False  # "fall asleep", "when did the wall fall": the verb
                # A verb's particle is part of the verb ("torn down", "find out", "add up").
                particle = w in PARTICLES and i > 0 and (
                    self.lemma(toks[i - 1].text) in self.lex.verbs or toks[i - 1].text in self.lex.irregular)
                measure = w == "long" and i > 0 and self.lemma(toks[i - 1].text) in PERIODS  # "week-long"
                if (w not in STOPWORDS and w not in FRAMES and not unit and not temporal and not particle
                        and not measure and w not in NUMBER_WORDS and w not in ORDINALS and w not in OPERATORS
                        and w not in GRADE_WORDS and not ranked):
                    f.content.add(lem)
                    if i + 1 < n and toks[i + 1].text.isalpha() and toks[i + 1].text not in STOPWORDS:
                        f.attributive.add(lem)
                        f.modifies[lem] = self.lemma(toks[i + 1].text)
                    prev = self.lemma(toks[i - 1].text) if i > 0 else ""
                    # "polar bears", "black bears": a noun an adjective modifies (not an adverb in -ly)
                    modified = (prev.isalpha() and prev not in STOPWORDS and prev in self.lex.adjectives
                                and not prev.endswith("ly") and prev not in self.lex.nouns)
                    if prev in DETERMINERS or prev in RESTRICTIVE or modified:
                        f.noun_uses.add(lem)
                    if prev in self.lex.nouns and prev not in STOPWORDS:
                        f.after_noun[lem] = prev
                        if lem in self.lex.nouns:
                            f.compound[lem] = prev
                    before = toks[i - 1].text if i > 0 else ""
                    if lem != self.lemma(w) or (lem in self.lex.verbs and not modified and (
                            (w != lem and w.endswith(("s", "ed", "ing"))) or before in VERB_CUES
                            or (before.endswith("s") and self.lemma(before) != before and before not in STOPWORDS))):
                        f.verb_uses.add(lem)
            i += 1
        return f

    def _number_words(self, toks: list[Token], i: int) -> tuple[float, int]:
        total, current = 0.0, 0.0
        seen = False
        while i < len(toks):
            w = toks[i].text
            if w in NUMBER_WORDS:
                current += NUMBER_WORDS[w]
            elif w in MULTIPLIERS:
                current = max(current, 1) * MULTIPLIERS[w]
                if MULTIPLIERS[w] >= 1000:
                    total, current = total + current, 0.0
            elif w == "and" and seen and i + 1 < len(toks) and toks[i + 1].text in NUMBER_WORDS:
                pass
            else:
                break
            seen = True
            i += 1
        return total + current, i

    # ---- comparison

    def _variants(self, w: str) -> set[str]:
        """A word and its plausible bases ("declining" -> "decline", "vertically" -> "vertical")."""
        out = {w, self.lemma(w)}
        for suffix, repl in (("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("ly", ""), ("ally", "al")):
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                base = w[: len(w) - len(suffix)] + repl
                if self.lex.known(base):
                    out.add(base)
        return out

    def opposite(self, a: str, b: str) -> bool:
        if self.lex.are_antonyms(a, b) or b in self._opposites.get(a, ()):
            return True
        for p, q in OPPOSING_PREFIXES:
            for x, y in ((a, b), (b, a)):
                if x.startswith(p) and y.startswith(q) and len(x) - len(p) >= 3 and x[len(p):] == y[len(q):]:
                    return True
        return (a.endswith("ful") and b.endswith("less") and a[:-3] == b[:-4]) or (
            b.endswith("ful") and a.endswith("less") and b[:-3] == a[:-4]
        )

    def check(self, a: str, b: str) -> str | None:
        """None when `a` and `b` may share an answer, else the first difference found."""
        if a == b:
            return None
        fa, fb = self.features(a), self.features(b)
        if fa.negations != fb.negations:
            return "negation"
        if fa.numbers != fb.numbers or fa.operators != fb.operators:
            return "number"
        if _dated(fa) != _dated(fb):
            return "date"
        if fa.units != fb.units:
            return "unit"
        # Words one side abbreviates are accounted for ("gcd" / "greatest common divisor").
        cover_a = {self.lemma(w) for e in fb.entities for w in _expansion(e, a)}
        cover_a |= {w for e in fb.entities for w in _expansion(e, a)}
        cover_b = {self.lemma(w) for e in fa.entities for w in _expansion(e, b)}
        cover_b |= {w for e in fa.entities for w in _expansion(e, b)}
        # An entity on one side may be a plain word on the other ("String" / "string").
        ea = {e for e in fa.entities - fb.entities if e not in fb.tokens and not _abbreviates(e, b)}
        eb = {e for e in fb.entities - fa.entities if e not in fa.tokens and not _abbreviates(e, a)}
        ea = {e for e in ea if not set(e.split()) <= cover_a}
        eb = {e for e in eb if not set(e.split()) <= cover_b}
        # A name swapped for another is a different question; so is a name added or dropped,
        # unless it is written like a plain word ("dedupe", "factor"): that is compared below.
        if (ea and eb) or (ea - fa.weak) or (eb - fb.weak):
            return "entity"
        only_a, only_b = fa.words - fb.words, fb.words - fa.words
        forms_a = {w for lem in only_a for w in fa.forms[lem]} | only_a
        forms_b = {w for lem in only_b for w in fb.forms[lem]} | only_b
        # Auxiliaries carry no opposition ("be" is WordNet's antonym of "differ": "equal" sense).
        va = {v for x in forms_a for v in self._variants(x)} - AUXILIARY_LEMMAS
        vb = {v for y in forms_b for v in self._variants(y)} - AUXILIARY_LEMMAS
        if any(self.opposite(x, y) for x in va for y in vb):
            return "antonym"
        ga = {g for g in fa.grade_bases if not (fa.forms.get(g, {g}) & cover_a)}
        gb = {g for g in fb.grade_bases if not (fb.forms.get(g, {g}) & cover_b)}
        if sum(fa.grades.values()) - (len(fa.grade_bases) - len(ga)) != sum(fb.grades.values()) - (
                len(fb.grade_bases) - len(gb)) or (fa.grades.keys() != fb.grades.keys() and ga and gb):
            return "comparative"
        for x in ga ^ gb:  # "tallest" vs "oldest"; "largest" = "biggest"
            others = gb if x in ga else ga
            if not any(self._related(x, y, fa, fb) for y in others):
                return "comparative"
        if self._scope_differs(fa, fb, cover_a, cover_b):
            return "scope"
        if _roles_differ(fa, fb):
            return "direction"
        abbr_a = {e for e in fa.entities if _expansion(e, b)}  # an abbreviation and what it stands for
        abbr_b = {e for e in fb.entities if _expansion(e, a)}
        # Grades on both sides were matched above ("faster" / "more quickly"): accounted for.
        graded_a = fa.grade_bases if fb.grade_bases else set()
        graded_b = fb.grade_bases if fa.grade_bases else set()
        ca = self._unmatched(fa, fb, fa.content - fb.content - cover_a - abbr_a - graded_a,
                             fb.content - fa.content - cover_b)
        cb = self._unmatched(fb, fa, fb.content - fa.content - cover_b - abbr_b - graded_b,
                             fa.content - fb.content - cover_a)
        if bool(ca) != bool(cb):
            fx, extra = (fa, ca) if ca else (fb, cb)
            if any(self._qualifier(w, fx) for w in extra):
                return "scope"  # one question is the other plus a qualifier ("rename a remote branch")
            if any(w in fx.governed for w in extra):
                return "scope"  # ... or plus a prepositional restriction ("ideas for kids")
            for w in extra:  # ... or a noun that makes a compound with a shared one ("time zone"),
                head = fx.compound.get(w)  # unless it names what the other already is ("capital city")
                if head in fa.content and head in fb.content and not self._related(head, w, fx, fx):
                    return "scope"
        if self._phrase_swapped(a, b, fa, fb):
            return "substitution"  # one short phrase for another, all else equal ("a long poem" / "a letter")
        raw_a, raw_b = fa.content - fb.content, fb.content - fa.content
        if len(raw_a) == 1 and len(raw_b) == 1 and ca and cb:
            x, y = next(iter(raw_a)), next(iter(raw_b))
            if (self._noun(x) or x in fa.noun_uses) and (self._noun(y) or y in fb.noun_uses):
                return "substitution"  # one thing swapped for another ("time" / "space", "a string" / "a list")
            if self._adjective(x) and self._adjective(y):
                return "substitution"  # one quality for another ("local" / "remote")
            if x in fa.modifies and fa.modifies[x] == fb.modifies.get(y):
                return "substitution"  # one modifier of the same word for another ("melting" / "boiling" point)
            if x in fa.after_noun and fa.after_noun[x] == fb.after_noun.get(y):
                return "substitution"  # one head of the same modifier for another ("flight delays" / "cancellations")
        return None

    def _phrase_swapped(self, a: str, b: str, fa: Features, fb: Features) -> bool:
        """The texts are equal but for one short span on each side, each naming a thing (a noun),
        and nothing in one span is related to anything in the other."""
        ta = [self.lemma(t.text) for t in tokenize(a) if t.text.isalnum()]
        tb = [self.lemma(t.text) for t in tokenize(b) if t.text.isalnum()]
        start = 0
        while start < min(len(ta), len(tb)) and ta[start] == tb[start]:
            start += 1
        end = 0
        while end < min(len(ta), len(tb)) - start and ta[-1 - end] == tb[-1 - end]:
            end += 1
        span_a, span_b = ta[start: len(ta) - end], tb[start: len(tb) - end]
        if not span_a or not span_b or len(span_a) > 4 or len(span_b) > 4 or start + end < 2:
            return False
        words_a = [w for w in span_a if w in fa.content]
        words_b = [w for w in span_b if w in fb.content]
        if not any((self._noun(w) or w in fa.noun_uses) and w not in fa.verb_uses for w in words_a) or not any(
                (self._noun(w) or w in fb.noun_uses) and w not in fb.verb_uses for w in words_b):
            return False
        if any(_abbreviates(w, " ".join(span_b)) for w in span_a) or any(
                _abbreviates(w, " ".join(span_a)) for w in span_b):
            return False  # "JVM" / "Java virtual machine"
        return not any(self._related(x, y, fa, fb) for x in words_a for y in words_b)

    def _unmatched(self, fx: Features, fy: Features, mine: set[str], theirs: set[str]) -> set[str]:
        """The content words of one side that no word of the other side's difference matches
        (a synonym, a related sense, a broader or narrower word, the same stem)."""
        return {x for x in mine if not any(self._related(x, y, fx, fy) for y in theirs)}

    def _scope_differs(self, fa: Features, fb: Features, cover_a: set[str], cover_b: set[str]) -> bool:
        """Quantifiers and restrictors that differ. A universal one on one side only ("show all
        installed packages") is how the other reads anyway; one matched by a related word on the
        other side ("average" / "mean") or inside an abbreviation is accounted for."""
        sa, sb = fa.scope - fb.scope, fb.scope - fa.scope
        left = []
        for diff, fx, fy, cover, other in ((sa, fa, fb, cover_a, sb), (sb, fb, fa, cover_b, sa)):
            for w in diff:
                if w in cover or (w in UNIVERSAL and not other):
                    continue
                if any(self._related(w, y, fx, fy) for y in fy.words - fx.words):
                    continue
                left.append(w)
        return bool(left)

    def _noun(self, lemma: str) -> bool:
        """Swapping one noun for another names a different thing ("time" / "space"); swapping
        verbs is how people paraphrase ("read" / "open"). Unknown words count as nouns."""
        return lemma in self.lex.nouns or not self.lex.known(lemma)

    def _adjective(self, lemma: str) -> bool:
        """An adjective or adverb and nothing else ("local", "remote", "bright")."""
        return lemma in self.lex.adjectives and lemma not in self.lex.verbs and lemma not in self.lex.nouns

    def _qualifier(self, lemma: str, f: Features) -> bool:
        """A word that narrows a question: a polar adjective or adverb ("remote", "descending"),
        not a verb ("penguins live in", "15% equals") nor an adverb of manner ("regularly")."""
        if lemma.endswith(("ed", "ing")) or lemma in self.lex.nouns or lemma in f.verb_uses:
            return False
        if lemma.endswith("ly") and lemma not in f.attributive:
            return False
        return lemma in self.lex.adjectives and bool(self.lex.antonyms.get(lemma))

    def _related(self, x: str, y: str, fa: Features, fb: Features) -> bool:
        forms_x = fa.forms.get(x, set()) | {x}
        forms_y = fb.forms.get(y, set()) | {y}
        bases_x = forms_x | {self.lex.irregular.get(w, w) for w in forms_x}
        bases_y = forms_y | {self.lex.irregular.get(w, w) for w in forms_y}
        if bases_x & bases_y:
            return True
        if any(self.lex.are_related(a, b) or self.lex.is_a(a, b) for a in bases_x for b in bases_y):
            return True
        # Same stem ("recommendation" / "recommend"): a change of word class, not of meaning.
        stem = min(len(x), len(y))
        if stem >= 5 and x[:stem - 2] == y[:stem - 2]:
            return True
        # A clipped form that is not a word of its own ("int" / "integer", "repo" / "repository").
        short, long = sorted((x, y), key=len)
        return len(short) >= 3 and long.startswith(short) and not self.lex.known(short)


def _abbreviates(short: str, text: str) -> bool:
    return bool(_expansion(short, text))


def _expansion(short: str, text: str) -> set[str]:
    """The words of `text` that `short` abbreviates: a run of 2-4 words whose letters it takes in
    order, starting with the run's first letter ("jvm" / "Java virtual machine", "sqrt" / "square
    root", "wwii" / "World War II"), or one word it clips ("dicts" / "dictionaries")."""
    if not short.isalnum() or len(short) < 2:
        return set()
    words = [t.text for t in tokenize(text) if t.text.isalnum()]
    for i in range(len(words)):
        if len(short) >= 4 and words[i] != short and words[i].startswith(short[:4]) and short[-1] in words[i]:
            return {words[i]}  # a clipped form of one word
        for n in (2, 3, 4):
            run = words[i: i + n]
            if len(run) < n or run[0][0] != short[0]:
                continue
            if _subsequence(short, "".join(run)) and all(_subsequence(w[0], short) for w in run):
                return set(run)
    return set()


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def _roles_differ(fa: Features, fb: Features) -> bool:
    """The same preposition governs different words that both texts contain: "celsius to
    fahrenheit" vs "fahrenheit to celsius", "15% of 240" vs "240 is what percent of 15"."""
    shared = fa.tokens & fb.tokens
    by_a: dict[str, set[str]] = {}
    by_b: dict[str, set[str]] = {}
    for p, w in fa.roles:
        if w in shared:
            by_a.setdefault(p, set()).add(w)
    for p, w in fb.roles:
        if w in shared:
            by_b.setdefault(p, set()).add(w)
    return any(by_a[p].isdisjoint(by_b[p]) for p in by_a.keys() & by_b.keys())


def _dated(f: Features) -> Counter:
    """Time references other than "now": a question is read as of now anyway ("the current
    time in Tokyo" = "the time in Tokyo"), so "now" alone does not make two questions differ."""
    return Counter({k: v for k, v in f.dates.items() if k != "now"})


def _season(toks: list[Token], i: int) -> bool:
    """"fall" names the season after a time preposition or determiner ("in the fall", "this
    fall", "fall 2023"); elsewhere it is the verb."""
    prev = toks[i - 1].text if i > 0 else ""
    before = toks[i - 2].text if i > 1 else ""
    nxt = toks[i + 1].text if i + 1 < len(toks) else ""
    timely = ("in", "this", "last", "next", "every", "during", "each", "until", "since", "by", "early", "late")
    return prev in timely or (prev == "the" and before in timely) or nxt[:1].isdigit()


def _dated_context(toks: list[Token], i: int) -> bool:
    """A short weekday ("Sun", "Sat") names a day only next to a date or a day word ("on Sat",
    "Sat 3 May"); else it is the sun, or a verb."""
    prev = toks[i - 1].text if i > 0 else ""
    nxt = toks[i + 1].text if i + 1 < len(toks) else ""
    return prev in ("on", "next", "last", "this", "every") or nxt[:1].isdigit() or nxt in MONTHS


def _num(value: str) -> str:
    try:
        x = float(value)
    except ValueError:
        return value
    return str(int(x)) if x == int(x) else repr(x)


QUANTIFIERS = frozenset({"many", "much", "few", "several", "per", "every", "each", "long"})


def _quantified(toks: list[Token], i: int) -> bool:
    """A period word used as a measure: after a number or quantifier, or before "long"."""
    if _after_number(toks, i):
        return True
    if i > 0 and toks[i - 1].text in QUANTIFIERS:
        return True
    return i + 1 < len(toks) and toks[i + 1].text == "long"


def _after_number(toks: list[Token], i: int) -> bool:
    if i > 0 and (toks[i - 1].text[0].isdigit() or toks[i - 1].text in NUMBER_WORDS):
        return True
    return toks[i].text in "$€£¥₹%"
