// The HTML source tab: the mail's HTML as text, coloured. A small scanner
// of our own (docs/decisions.md says why no library): it cuts the source
// into comments, doctypes, tags (name, attribute names, values) and text,
// and builds spans whose textContent is each piece, so the pieces joined
// are the source exactly and nothing of the mail is ever parsed as HTML.
// It only colours: a malformed source is shown as it is, coloured less well.

const LIMIT = 500000;   // characters: past this the source is shown plain (scanning is linear,
                        // but a few hundred thousand spans make the tab slow to open)
const RAW_TEXT = new Set(['script', 'style', 'textarea', 'title']);
const ATTRIBUTE = /([^\s"'>/=]+)(\s*=\s*)?("[^"]*"|'[^']*'|[^\s"'>]+)?/g;

export function highlightHtml(source) {
  const out = document.createDocumentFragment();
  if (source.length > LIMIT) { out.append(source); return out; }
  const piece = (cls, text) => {
    if (!text) return;
    if (!cls) { out.append(text); return; }
    const span = document.createElement('span');
    span.className = cls;
    span.textContent = text;
    out.append(span);
  };
  let at = 0;
  while (at < source.length) {
    const lt = source.indexOf('<', at);
    if (lt < 0) { piece(null, source.slice(at)); break; }
    piece(null, source.slice(at, lt));
    if (source.startsWith('<!--', lt)) {
      const end = source.indexOf('-->', lt + 4);
      at = end < 0 ? source.length : end + 3;
      piece('hl-comment', source.slice(lt, at));
    } else if (/^<[!?]/.test(source.slice(lt, lt + 2))) {
      const end = source.indexOf('>', lt);
      at = end < 0 ? source.length : end + 1;
      piece('hl-doctype', source.slice(lt, at));
    } else if (/^<\/?[A-Za-z]/.test(source.slice(lt, lt + 3))) {
      at = tag(source, lt, piece);
      const name = /^<([A-Za-z][^\s/>]*)/.exec(source.slice(lt, lt + 40));
      if (name && RAW_TEXT.has(name[1].toLowerCase())) {
        // Its content is text up to its end tag, whatever it holds.
        const close = source.toLowerCase().indexOf(`</${name[1].toLowerCase()}`, at);
        const end = close < 0 ? source.length : close;
        piece(null, source.slice(at, end));
        at = end;
      }
    } else {
      piece(null, '<');
      at = lt + 1;
    }
  }
  return out;
}

// One tag from `<` to its `>` (quotes respected); returns where it ends.
function tag(source, lt, piece) {
  let end = lt + 1;
  let quote = null;
  for (; end < source.length; end++) {
    const c = source[end];
    if (quote) { if (c === quote) quote = null; } else if (c === '"' || c === "'") quote = c;
    else if (c === '>') break;
  }
  const whole = source.slice(lt, Math.min(end + 1, source.length));
  const head = /^<\/?[^\s/>]*/.exec(whole)[0];
  piece('hl-tag', head);
  let rest = whole.slice(head.length);
  const closer = /\/?>$/.exec(rest);
  const tail = closer ? closer[0] : '';
  rest = rest.slice(0, rest.length - tail.length);
  let last = 0;
  for (const match of rest.matchAll(ATTRIBUTE)) {
    piece(null, rest.slice(last, match.index));
    piece('hl-attr', match[1]);
    piece(null, match[2] || '');
    piece('hl-value', match[3] || '');
    last = match.index + match[0].length;
  }
  piece(null, rest.slice(last));
  piece('hl-tag', tail);
  return lt + whole.length;
}
