// Answers as Markdown: parsed by marked, sanitised by DOMPurify (a model's
// output is untrusted HTML), code highlighted by highlight.js with a copy
// button, and the assistant's citations made into links.

const { marked, DOMPurify, hljs } = window;

marked.setOptions({ gfm: true, breaks: false });

/** Citations as the assistant writes them: [watch/path:12-14] or [path:12]. */
const CITATION = /\[([^\[\]\n:]+\/[^\[\]\n:]+):(\d+)(?:-(\d+))?\]/g;

/** Put `text`, rendered, into `element`. */
export function renderInto(element, text) {
  const html = marked.parse(text);
  element.innerHTML = DOMPurify.sanitize(html, { FORBID_ATTR: ["style"], FORBID_TAGS: ["style"] });
  for (const block of element.querySelectorAll("pre > code")) {
    hljs.highlightElement(block);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.addEventListener("click", async () => {
      await navigator.clipboard?.writeText(block.textContent);
      copy.textContent = "Copied";
    });
    block.parentElement.append(copy);
  }
  for (const link of element.querySelectorAll("a[href]")) {
    link.rel = "noopener noreferrer";
    link.target = "_blank";
  }
  linkCitations(element);
}

/** Turn citation text into links carrying the path and lines. */
function linkCitations(element) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest("code, pre, a")) continue;
    CITATION.lastIndex = 0;
    if (CITATION.test(node.data)) found.push(node);
  }
  for (const node of found) {
    const parts = document.createDocumentFragment();
    let last = 0;
    for (const match of node.data.matchAll(CITATION)) {
      parts.append(node.data.slice(last, match.index));
      const link = document.createElement("a");
      link.href = "#";
      link.className = "cite";
      link.dataset.path = match[1];
      link.dataset.start = match[2];
      link.dataset.end = match[3] || match[2];
      link.textContent = match[0];
      parts.append(link);
      last = match.index + match[0].length;
    }
    parts.append(node.data.slice(last));
    node.replaceWith(parts);
  }
}
