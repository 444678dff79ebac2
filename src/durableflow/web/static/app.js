// durableflow UI: live page parts over server-sent events, confirmations, diagrams.
// The server renders (and escapes) every HTML fragment it sends; this script only
// swaps them in. No other script runs on these pages (see the Content-Security-Policy).
"use strict";

(function () {
  let diagramCount = 0;

  function drawDiagrams(root) {
    if (!window.mermaid) return;
    const sources = root.querySelectorAll("pre.mermaid-source:not([data-drawn])");
    sources.forEach(function (pre) {
      pre.setAttribute("data-drawn", "1");
      const id = "durableflow-diagram-" + diagramCount++;
      // textContent is the diagram's text as the server escaped it for HTML: unescaped again.
      window.mermaid.render(id, pre.textContent).then(function (result) {
        const holder = document.createElement("div");
        holder.className = "diagram-svg";
        holder.innerHTML = result.svg; // sanitised by Mermaid (securityLevel: strict)
        pre.replaceWith(holder);
      }).catch(function (error) {
        pre.setAttribute("data-error", String(error && error.message || error));
      });
    });
  }

  function bindConfirmations(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  function followLive(element) {
    const state = document.querySelector("[data-live-state]");
    const source = new EventSource(element.dataset.live);
    source.addEventListener("update", function (event) {
      element.innerHTML = event.data;
      element.dispatchEvent(new CustomEvent("durableflow:updated", { bubbles: true }));
      bindConfirmations(element);
      drawDiagrams(element);
    });
    source.addEventListener("gone", function () {
      source.close();
      if (state) { state.textContent = "this run no longer exists"; state.classList.add("offline"); }
    });
    source.addEventListener("open", function () {
      if (state) { state.textContent = "live"; state.classList.remove("offline"); }
    });
    source.addEventListener("error", function () {
      if (state) { state.textContent = "reconnecting…"; state.classList.add("offline"); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.mermaid) {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
    }
    bindConfirmations(document);
    drawDiagrams(document);
    document.querySelectorAll("[data-live]").forEach(followLive);
  });
})();
