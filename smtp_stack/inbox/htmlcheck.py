"""The HTML check: which HTML and CSS features of a message's HTML part mail
clients lack, in Mailpit's `HTMLCheckResponse` (docs/inbox.md).

Mailpit's htmlcheck (internal/htmlcheck) is the specification of what is
tested and what the numbers mean; the way of finding the features is ours:
- elements and attributes come from the parsed HTML (the standard library's
  `html.parser`, which the inbox already reads HTML with); a feature's
  `Found` is the number of elements that have it;
- CSS comes from `style=` attributes and `<style>` blocks, parsed with
  tinycss2 (declarations, selectors, at-rules as tokens, not regular
  expressions over text): a property declared on an element counts that
  element, one declared in a `<style>` rule counts the rule (Mailpit inlines
  the rules first and counts the elements they reach); units count each
  time they are used, selectors' pseudo-classes and at-rules each time they
  are written;
- the features tested are those Mailpit tests (FEATURES below) that the
  data set knows, plus Mailpit's own `html-script`; `Total.Tests` is their
  number (Mailpit counts a found HTML feature twice there);
- `Total.Nodes` counts the elements as Mailpit does: all but html, head and
  meta in a document with a `</body>`, else those outside `<head>`; the
  overall `Total` takes, of the features found, the largest share of
  partial and of unsupported support weighted by Found / Nodes, as Mailpit's.
Remote stylesheets are not fetched (Mailpit fetches `<link rel=stylesheet>`
unless told not to): the check never reaches out of the machine.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from typing import Any

import tinycss2  # no stubs, no py.typed
import tinycss2.ast

from . import caniemail

Json = dict[str, Any]
Attrs = dict[str, str]

# -- what is tested (Mailpit's set of features, by caniemail slug) -------------------------

# Elements by name, by slug.
TAG_FEATURES: dict[str, tuple[str, ...]] = {
    'html-object': ('object', 'embed', 'image', 'pdf'),
    'html-link': ('link',), 'html-hr': ('hr',), 'html-dialog': ('dialog',),
    'html-picture': ('picture',), 'html-svg': ('svg',), 'html-progress': ('progress',),
    'html-meter': ('meter',), 'html-audio': ('audio',), 'html-form': ('form',),
    'html-base': ('base',), 'html-video': ('video',), 'html-select': ('select',),
    'html-textarea': ('textarea',), 'html-style': ('style',),
    'html-semantics': ('article', 'aside', 'details', 'figcaption', 'figure', 'footer',
                       'header', 'main', 'mark', 'nav', 'section', 'summary', 'time'),
}
FEATURES_OF_TAG: dict[str, list[str]] = {}
for _slug, _tags in TAG_FEATURES.items():
    for _name in _tags:
        FEATURES_OF_TAG.setdefault(_name, []).append(_slug)


def _typed(tag_names: tuple[str, ...], kind: str) -> Callable[[str, Attrs], bool]:
    return lambda tag, attrs: tag in tag_names and attrs.get('type', '').lower() == kind


# Elements by their attributes, by slug. Where Mailpit's selector names an
# element HTML has not (`submit`, `checkbox`, `radio`), the input type the
# feature is about is meant.
ATTRIBUTE_TESTS: dict[str, Callable[[str, Attrs], bool]] = {
    'html-srcset': lambda tag, attrs: 'srcset' in attrs,
    'html-required': lambda tag, attrs: 'required' in attrs,
    'html-input-submit': _typed(('input',), 'submit'),
    'html-button-reset': _typed(('button',), 'reset'),
    'html-button-submit': _typed(('button', 'input'), 'submit'),
    'html-input-checkbox': _typed(('input',), 'checkbox'),
    'html-input-hidden': lambda tag, attrs: attrs.get('type', '').lower() == 'hidden',
    'html-input-radio': _typed(('input',), 'radio'),
    'html-input-text': _typed(('input',), 'text'),
    'html-anchor-links': lambda tag, attrs: tag == 'a' and attrs.get('href', '').startswith('#'),
    'html-image-maps': lambda tag, attrs: tag == 'map' or (tag == 'img' and 'usemap' in attrs),
}
TESTED_ATTRIBUTES = frozenset({'srcset', 'required', 'type', 'href', 'usemap'})

# <img src>: by the file name's extension (query and fragment aside), or data:.
IMAGE_FEATURES = {f'image-{kind}': re.compile(rf'\.{pattern}$', re.I) for kind, pattern in (
    ('apng', 'apng'), ('avif', 'avif'), ('bmp', 'bmp'), ('gif', 'gif'), ('hdr', 'hdr'),
    ('heif', 'heif'), ('ico', 'ico'), ('mp4', 'mp4'), ('svg', 'svg'), ('tiff', 'tiff?'),
    ('webp', 'webp'))}
DATA_IMAGE = re.compile(r'^data:image/', re.I)

# Presentational attributes Mailpit reads as the CSS property they stand for.
ATTRIBUTE_FEATURES = {'bgcolor': 'css-background-color', 'background': 'css-background',
                      'border': 'css-border', 'height': 'css-height',
                      'padding': 'css-padding', 'width': 'css-width'}

# Properties whose feature is `css-<name>`.
PROPERTIES = frozenset('''
    accent-color align-items aspect-ratio background-blend-mode background-clip
    background-color background-image background-origin background-position
    background-repeat background-size background border-image border-radius border
    box-shadow box-sizing caption-side clip-path column-count direction display filter
    flex-direction flex-wrap float font-kerning font-weight font gap grid-template height
    hyphens inline-size intrinsic-size justify-content letter-spacing line-height
    list-style-image list-style-position list-style margin max-block-size max-height
    max-width min-height min-inline-size min-width mix-blend-mode object-fit
    object-position opacity outline-offset outline overflow-wrap overflow padding position
    tab-size table-layout text-align-last text-align text-decoration-color
    text-decoration-thickness text-decoration text-emphasis-position text-emphasis
    text-indent text-overflow text-shadow text-transform text-underline-offset transform
    visibility white-space width word-break writing-mode z-index'''.split())

# Properties grouped under one feature.
PROPERTY_GROUPS = {
    'css-border-inline-block-individual': ('border-inline',),
    'css-margin-block-start-end': ('margin-block-start', 'margin-block-end'),
    'css-margin-inline-start-end': ('margin-inline-start', 'margin-inline-end'),
    'css-margin-inline-block': ('margin-inline-block',),
    'css-padding-block-start-end': ('padding-block-start', 'padding-block-end'),
    'css-padding-inline-start-end': ('padding-inline-start', 'padding-inline-end'),
    'css-padding-inline-block': ('padding-inline-block',),
    'css-block-inline-size': ('block-inline-size',),
    'css-scroll-snap': ('scroll-snap-type', 'scroll-snap-align', 'scroll-snap-stop'),
}
GROUP_OF = {name: slug for slug, names in PROPERTY_GROUPS.items() for name in names}

DISPLAY_VALUES = {'flex': 'css-display-flex', 'grid': 'css-display-grid',
                  'none': 'css-display-none'}
FUNCTIONS = {'rgb': 'css-rgb', 'rgba': 'css-rgba', 'calc': 'css-unit-calc',
             'radial-gradient': 'css-radial-gradient', 'conic-gradient': 'css-conic-gradient',
             'var': 'css-variables', 'lab': 'css-modern-color', 'lch': 'css-modern-color',
             'oklab': 'css-modern-color', 'oklch': 'css-modern-color',
             'color': 'css-modern-color', 'hwb': 'css-modern-color'}
UNITS = frozenset({'ch', 'rem', 'vh', 'vmax', 'vmin', 'vw'})
AT_RULES = {'font-face': 'css-at-font-face', 'import': 'css-at-import',
            'keyframes': 'css-at-keyframes', 'media': 'css-at-media',
            'supports': 'css-at-supports'}
PSEUDO_CLASSES = frozenset('''active checked first-child first-of-type focus has hover lang
    last-child last-of-type link not nth-child nth-last-child nth-last-of-type nth-of-type
    only-child only-of-type target visited'''.split())
PSEUDO_ELEMENTS = frozenset('after before first-letter first-line marker placeholder'.split())
LEGACY_PSEUDO_ELEMENTS = frozenset({'after', 'before', 'first-letter', 'first-line'})


def tested() -> list[str]:
    """Every feature this check looks for that the data set describes."""
    slugs = {*TAG_FEATURES, *ATTRIBUTE_TESTS, 'html-body', *IMAGE_FEATURES, 'image-base64',
             *ATTRIBUTE_FEATURES.values(), *(f'css-{name}' for name in PROPERTIES),
             *PROPERTY_GROUPS, *DISPLAY_VALUES.values(), *FUNCTIONS.values(),
             'css-important', *(f'css-unit-{unit}' for unit in UNITS), 'css-unit-initial',
             *AT_RULES.values(), *(f'css-pseudo-class-{name}' for name in PSEUDO_CLASSES),
             *(f'css-pseudo-element-{name}' for name in PSEUDO_ELEMENTS)}
    known = caniemail.features()
    return sorted(slug for slug in slugs if slug in known)


# -- the HTML ------------------------------------------------------------------------

class _Elements(HTMLParser):
    """Every element with its attributes, the text of the <style> blocks,
    the scripts, and the elements inside an explicit <head>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, Attrs, bool]] = []     # tag, attributes, in <head>
        self.styles: list[str] = []
        self.scripts = 0
        self._in_head = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name.lower(): value or '' for name, value in attrs}
        if tag == 'head':
            self._in_head = True
        elif tag == 'body':
            self._in_head = False
        elif tag == 'style':
            self._in_style = True
            self.styles.append('')
        elif tag == 'script' and attributes.get('type', '').lower() not in (
                'application/ld+json', 'application/json'):
            self.scripts += 1
        self.elements.append((tag, attributes, self._in_head))

    def handle_endtag(self, tag: str) -> None:
        if tag == 'head':
            self._in_head = False
        elif tag == 'style':
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and self.styles:
            self.styles[-1] += data


def _count_nodes(elements: list[tuple[str, Attrs, bool]], has_body: bool) -> int:
    if has_body:
        return sum(1 for tag, _, _ in elements if tag not in ('html', 'head', 'meta'))
    return sum(1 for tag, _, in_head in elements
               if tag == 'script' or (not in_head and tag not in ('html', 'head', 'body',
                                                                  'meta')))


# -- the CSS ---------------------------------------------------------------------------

def _tokens(nodes: Iterable[Any]) -> Iterable[Any]:
    """Every token of a value, the arguments of functions and blocks included."""
    for node in nodes:
        yield node
        if isinstance(node, tinycss2.ast.FunctionBlock):
            yield from _tokens(node.arguments)
        elif isinstance(node, (tinycss2.ast.ParenthesesBlock, tinycss2.ast.SquareBracketsBlock,
                               tinycss2.ast.CurlyBracketsBlock)):
            yield from _tokens(node.content)


def _declaration_features(declaration: tinycss2.ast.Declaration) -> tuple[set[str], Counter[str]]:
    """(the features a declaration is, the units it uses and how often)."""
    name = declaration.lower_name
    found: set[str] = set()
    units: Counter[str] = Counter()
    if name.startswith('--'):
        found.add('css-variables')
    elif name in PROPERTIES:
        found.add(f'css-{name}')
    if name in GROUP_OF:
        found.add(GROUP_OF[name])
    if declaration.important:
        found.add('css-important')
    values = [t for t in declaration.value if t.type not in ('whitespace', 'comment')]
    if name == 'display' and len(values) == 1 and values[0].type == 'ident':
        shown = DISPLAY_VALUES.get(values[0].lower_value)
        if shown:
            found.add(shown)
    if len(values) == 1 and values[0].type == 'ident' and values[0].lower_value == 'initial':
        units['css-unit-initial'] += 1
    for token in _tokens(declaration.value):
        if token.type == 'function' and token.lower_name in FUNCTIONS:
            found.add(FUNCTIONS[token.lower_name])
        elif token.type == 'dimension' and token.lower_unit in UNITS:
            units[f'css-unit-{token.lower_unit}'] += 1
    return found, units


def _declarations(nodes: Any) -> list[tinycss2.ast.Declaration]:
    return [node for node in tinycss2.parse_blocks_contents(nodes, skip_comments=True,
                                                            skip_whitespace=True)
            if node.type == 'declaration']


def _style_features(style: str) -> tuple[set[str], Counter[str]]:
    """The features and units of a `style=` attribute."""
    features: set[str] = set()
    units: Counter[str] = Counter()
    for declaration in _declarations(style):
        more, used = _declaration_features(declaration)
        features.update(more)
        units.update(used)
    return features, units


def _selector_features(prelude: list[Any]) -> Counter[str]:
    """Pseudo-classes and pseudo-elements written in a selector."""
    found: Counter[str] = Counter()
    tokens = list(prelude)
    for i, token in enumerate(tokens):
        if token.type != 'literal' or token.value != ':' or i + 1 >= len(tokens):
            continue
        after = tokens[i + 1]
        double = i > 0 and tokens[i - 1].type == 'literal' and tokens[i - 1].value == ':'
        if after.type == 'literal' and after.value == ':':
            continue                                  # the first colon of ::
        name = after.lower_value if after.type == 'ident' else (
            after.lower_name if after.type == 'function' else '')
        if double or name in LEGACY_PSEUDO_ELEMENTS:
            if name in PSEUDO_ELEMENTS:
                found[f'css-pseudo-element-{name}'] += 1
        elif name in PSEUDO_CLASSES:
            found[f'css-pseudo-class-{name}'] += 1
    return found


def _stylesheet_features(rules: list[Any], found: Counter[str]) -> None:
    for rule in rules:
        if rule.type == 'qualified-rule':
            found.update(_selector_features(rule.prelude))
            for declaration in _declarations(rule.content):
                features, units = _declaration_features(declaration)
                found.update(features)
                found.update(units)
        elif rule.type == 'at-rule':
            if rule.lower_at_keyword in AT_RULES:
                found[AT_RULES[rule.lower_at_keyword]] += 1
            if rule.lower_at_keyword in ('media', 'supports') and rule.content is not None:
                _stylesheet_features(tinycss2.parse_rule_list(
                    rule.content, skip_comments=True, skip_whitespace=True), found)


# -- the check -------------------------------------------------------------------------

def check(markup: str) -> Json:
    """Mailpit's HTMLCheckResponse for an HTML part."""
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    has_body = re.search(r'</body>', markup, re.I) is not None
    nodes = _count_nodes(parser.elements, has_body)
    found: Counter[str] = Counter()
    if has_body:
        found['html-body'] = 1
    styles: dict[str, tuple[set[str], Counter[str]]] = {}    # mails repeat their styles
    for tag, attrs, _ in parser.elements:
        per_element = set(FEATURES_OF_TAG.get(tag, ()))
        if tag == 'map' or not TESTED_ATTRIBUTES.isdisjoint(attrs):
            per_element.update(slug for slug, test in ATTRIBUTE_TESTS.items() if test(tag, attrs))
        per_element.update(ATTRIBUTE_FEATURES[name] for name in attrs
                           if name in ATTRIBUTE_FEATURES)
        if tag == 'img' and attrs.get('src'):
            src = re.split(r'[?#]', attrs['src'], maxsplit=1)[0]
            per_element.update(slug for slug, pattern in IMAGE_FEATURES.items()
                               if pattern.search(src))
            if DATA_IMAGE.match(attrs['src']):
                per_element.add('image-base64')
        style = attrs.get('style')
        if style:
            if style not in styles:
                styles[style] = _style_features(style)
            features, units = styles[style]
            per_element.update(features)
            found.update(units)
        found.update(per_element)
    for css in parser.styles:
        _stylesheet_features(tinycss2.parse_stylesheet(css, skip_comments=True,
                                                       skip_whitespace=True), found)
    slugs = tested()
    warnings = [caniemail.warning(slug, found[slug]) for slug in slugs if found[slug]]
    if parser.scripts:
        warnings.append(caniemail.script_warning(parser.scripts))
    return {'Platforms': caniemail.platforms(),
            'Total': _total(warnings, nodes, len(slugs) + 1),
            'Warnings': _ranked(warnings, nodes)}


def _weight(warning: Json, nodes: int) -> float:
    score = warning['Score']
    return float((score['Unsupported'] + score['Partial']) * score['Found'] / max(nodes, 1))


def _ranked(warnings: list[Json], nodes: int) -> list[Json]:
    """The features that matter most first, as Mailpit orders them."""
    return sorted(warnings, key=lambda w: (-_weight(w, nodes), w['Slug']))


def _total(warnings: list[Json], nodes: int, tests: int) -> Json:
    partial = unsupported = 0.0
    for warning in warnings:
        score = warning['Score']
        share = score['Found'] / max(nodes, 1)
        partial = max(partial, score['Partial'] * share)
        unsupported = max(unsupported, score['Unsupported'] * share)
    return {'Nodes': nodes, 'Tests': tests, 'Supported': 100 - partial - unsupported,
            'Partial': partial, 'Unsupported': unsupported}
