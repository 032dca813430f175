//! `harness report --html FILE`: the report as one self-contained page that opens offline in any
//! browser — the Markdown it was written as (REPORT.md, answer first, or a run's report.md), its
//! figures inlined as data URIs (nothing is fetched), every table sortable by a click on its
//! header, each check's verdict marked (supported, not supported, not resolved), headings with the
//! anchors GitHub gives them so that the Markdown's links work.
//!
//! The page marks itself when its script has run (`<html data-ready="yes">`), counts script
//! errors (`data-errors`), lists the links within it whose target is not on it (`data-broken-links`), and opened as `…#selftest` it sorts its first sortable table and says
//! whether the rows came out in order (`data-selftest="sorted"`): a headless browser's
//! `--dump-dom` reads all three (the browser test in harness/tests/cli.rs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd};

/// Renders `markdown`, whose relative links start at `base` (its folder), as a page titled `title`.
pub fn render(markdown: &str, base: &Path, title: &str) -> Result<String> {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events: Vec<Event<'_>> = Parser::new_ext(markdown, options).collect();
    let events = with_anchors(events);
    let mut missing = Vec::new();
    let events = events.into_iter().map(|event| match event {
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            let dest_url = match inline(base, &dest_url) {
                Some(data) => CowStr::from(data),
                None => {
                    missing.push(dest_url.to_string());
                    dest_url
                }
            };
            Event::Start(Tag::Image { link_type, dest_url, title, id })
        }
        other => other,
    });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events);
    if !missing.is_empty() {
        eprintln!("html: {} figure(s) not found, left as links: {}", missing.len(), missing.join(", "));
    }
    let body = mark_verdicts(&body.replace("<table>", "<table class=\"sortable\">"));
    let mut page = String::with_capacity(body.len() + 8192);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n<script>{ERRORS}</script>\n</head>\n<body>\n<main>\n{body}</main>\n\
         <script>{SORT}</script>\n</body>\n</html>\n",
        escape(title)
    );
    Ok(page)
}

/// Writes the page for the Markdown file `markdown` to `out`.
pub fn write(markdown: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(markdown).with_context(|| format!("reading {}", markdown.display()))?;
    let base = markdown.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let title = text.lines().find_map(|l| l.strip_prefix("# ")).unwrap_or("herdbench report");
    let page = render(&text, base, title)?;
    std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {} (self-contained: figures inline, nothing fetched)", out.display());
    Ok(())
}

/// A local SVG or PNG as a data URI; `None` for a remote address or a file that is not there.
fn inline(base: &Path, url: &str) -> Option<String> {
    if url.contains("://") || url.starts_with("data:") {
        return None;
    }
    let path = base.join(url);
    let mime = match path.extension()?.to_str()? {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => return None,
    };
    let bytes = std::fs::read(&path).ok()?;
    Some(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// Gives every heading the id GitHub would (lower case, punctuation dropped, spaces as hyphens,
/// `-1`, `-2` … for repeats), so that `[…](#capacity-knees)` finds its section.
fn with_anchors(events: Vec<Event<'_>>) -> Vec<Event<'_>> {
    let mut out = Vec::with_capacity(events.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut i = 0;
    while i < events.len() {
        if let Event::Start(Tag::Heading { level, id: None, classes, attrs }) = &events[i] {
            let end = events[i..].iter().position(|e| matches!(e, Event::End(TagEnd::Heading(_)))).map_or(i, |n| i + n);
            let text: String = events[i + 1..end]
                .iter()
                .filter_map(|e| match e {
                    Event::Text(t) | Event::Code(t) => Some(t.as_ref()),
                    _ => None,
                })
                .collect();
            let slug = slug(&text, &mut seen);
            out.push(Event::Start(Tag::Heading {
                level: *level,
                id: Some(CowStr::from(slug)),
                classes: classes.clone(),
                attrs: attrs.clone(),
            }));
        } else {
            out.push(events[i].clone());
        }
        i += 1;
    }
    out
}

fn slug(text: &str, seen: &mut BTreeMap<String, usize>) -> String {
    let base: String = text
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect();
    let n = seen.entry(base.clone()).or_default();
    let slug = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
    *n += 1;
    slug
}

/// Marks each check's verdict: `— supported:`, `— not supported:`, `— not resolved by the data:`.
fn mark_verdicts(html: &str) -> String {
    html.replace("— not supported:", "— <mark class=\"verdict bad\">not supported</mark>:")
        .replace("— not resolved by the data:", "— <mark class=\"verdict open\">not resolved by the data</mark>:")
        .replace("— supported:", "— <mark class=\"verdict ok\">supported</mark>:")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "
body { font: 16px/1.5 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #1b1b1b; margin: 0; }
main { max-width: 72rem; margin: 0 auto; padding: 1rem 2rem 4rem; }
h1 { font-size: 1.9rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
a { color: #0b5cad; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
pre code { display: block; padding: .6rem; overflow-x: auto; }
blockquote { margin: .3rem 0 .6rem; padding: .2rem .8rem; border-left: 4px solid #c9d6e3; background: #f7f9fb; font-size: .92rem; }
mark.verdict { padding: 0 .35em; border-radius: 3px; font-weight: 600; }
mark.ok { background: #d7f2dc; color: #135a22; } mark.bad { background: #f8d7d7; color: #7d1616; }
mark.open { background: #fff1c2; color: #6b5100; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
p > img + em, p > em { color: #444; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .82rem; display: block; overflow-x: auto; width: max-content; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: .2rem .45rem; white-space: nowrap; }
td:last-child { white-space: normal; min-width: 12rem; }
th { background: #f0f3f6; cursor: pointer; position: sticky; top: 0; }
th[data-sort=asc]::after { content: ' ▲'; } th[data-sort=desc]::after { content: ' ▼'; }
tr:nth-child(even) td { background: #fafafa; }
";

/// Runs first: counts script errors where a test can read them.
const ERRORS: &str = "window.addEventListener('error', function (e) {
  var d = document.documentElement.dataset; d.errors = (d.errors || '') + e.message + ';';
});";

/// Sortable tables (numbers with their units: µs, ms, s, k, M, %, MiB), then the page's marks.
const SORT: &str = "(function () {
  var scale = { 'µs': 1, 'ms': 1e3, 's': 1e6, 'k': 1e3, 'M': 1e6, '%': 1, 'MiB': 1 };
  function number(text) {
    var m = text.replace(/[,\\s]/g, '').match(/^([-+]?\\d+(?:\\.\\d+)?)(µs|ms|s|k|M|%|MiB)?(?:\\/s)?(?:±.*)?$/);
    return m ? parseFloat(m[1]) * (m[2] ? scale[m[2]] : 1) : null;
  }
  function cell(row, col) { return row.cells[col] ? row.cells[col].textContent.trim() : ''; }
  function sort(table, col, th) {
    var heads = table.tHead.rows[0].cells, body = table.tBodies[0];
    var dir = th.dataset.sort === 'asc' ? -1 : 1;
    for (var i = 0; i < heads.length; i++) { delete heads[i].dataset.sort; }
    th.dataset.sort = dir === 1 ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cell(a, col), y = cell(b, col), nx = number(x), ny = number(y);
      if (nx !== null && ny !== null) { return dir * (nx - ny); }
      if (nx !== null) { return -1; } if (ny !== null) { return 1; }
      return dir * x.localeCompare(y);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0; th.title = 'sort by this column';
      th.addEventListener('click', function () { sort(table, col, th); });
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sort(table, col, th); } });
    });
  });
  var root = document.documentElement.dataset;
  if (location.hash === '#selftest') {
    // Sort the first table with a numeric column by it, and say whether the rows came out in order.
    var verdict = 'no numeric column';
    outer: for (var t = 0; t < tables.length; t++) {
      var table = tables[t]; if (!table.tHead || !table.tBodies.length || table.tBodies[0].rows.length < 2) { continue; }
      var heads = table.tHead.rows[0].cells;
      for (var c = 1; c < heads.length; c++) {
        var values = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return number(cell(r, c)); });
        if (values.some(function (v) { return v === null; })) { continue; }
        heads[c].click();
        var sorted = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return number(cell(r, c)); });
        var ordered = sorted.every(function (v, i) { return i === 0 || sorted[i - 1] <= v; });
        verdict = ordered ? 'sorted' : 'not sorted: ' + sorted.join(' ');
        break outer;
      }
    }
    root.selftest = verdict;
  }
  // Links within the page whose target is not on it.
  var broken = Array.prototype.filter.call(document.querySelectorAll('a[href^=\"#\"]'), function (a) {
    var id = decodeURIComponent(a.getAttribute('href').slice(1));
    return id && !document.getElementById(id);
  }).map(function (a) { return a.getAttribute('href'); });
  root.brokenLinks = broken.join(' ');
  root.figures = String(document.querySelectorAll('img[src^=\"data:image/\"]').length);
  root.ready = 'yes';
})();";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_inlines_its_figures_anchors_its_headings_and_marks_verdicts() {
        let dir = std::env::temp_dir().join(format!("herd-html-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fig")).expect("a folder");
        std::fs::write(dir.join("fig/a.svg"), "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").expect("a figure");
        let md = "# Title\n\n## Capacity knees\n\n## Capacity knees\n\n[see](#capacity-knees)\n\n\
                  ![a](fig/a.svg)\n\n*a: what to see*\n\n![gone](fig/none.svg)\n\n\
                  | style | p99 |\n|---|---:|\n| a | 2 ms |\n| b | 900 µs |\n\n\
                  > check: w 1k cpu a < b — supported: ratio 0.5 (0.4–0.6), 5 rounds\n\
                  > check: w 1k cpu a < b — not supported: ratio 1.5 (1.4–1.6), 5 rounds\n";
        let page = render(md, &dir, "T").expect("renders");
        assert!(page.contains("<h2 id=\"capacity-knees\">") && page.contains("<h2 id=\"capacity-knees-1\">"), "{page}");
        assert!(page.contains("src=\"data:image/svg+xml;base64,"), "the figure inline: {page}");
        assert!(page.contains("src=\"fig/none.svg\""), "a missing figure stays a link");
        assert!(page.contains("<table class=\"sortable\">"), "{page}");
        assert!(page.contains("<mark class=\"verdict ok\">supported</mark>"), "{page}");
        assert!(page.contains("<mark class=\"verdict bad\">not supported</mark>"), "{page}");
        assert!(!page.contains("src=\"http"), "nothing to fetch");
        let _ = std::fs::remove_dir_all(dir);
    }
}
