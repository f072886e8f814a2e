// Draws the flow diagrams of the page (pre.mermaid) with the vendored Mermaid, strict security level.
document.addEventListener("DOMContentLoaded", function () {
  if (!window.mermaid) { return; }
  window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral",
                              flowchart: { useMaxWidth: true, htmlLabels: true } });
  window.mermaid.run({ querySelector: "pre.mermaid" });
});
