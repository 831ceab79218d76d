// The console's only script (CSP: script-src 'self'). It adds, and nothing depends on it:
// times in the viewer's zone, the viewer's zone for the filter form, confirmation of
// destructive actions, and progress on forms that take a while.
"use strict";

(function () {
  var zone = "UTC";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch (e) { /* very old browser: times stay in UTC */ }

  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      el.title = el.getAttribute("datetime");  // the stored value, on hover
      el.textContent = format.format(when);
    });
  }

  function viewerZone(root) {
    root.querySelectorAll("input[data-viewer-zone]").forEach(function (el) {
      if (!el.value || el.value === "UTC") { el.value = zone; }
    });
    root.querySelectorAll(".viewer-zone").forEach(function (el) {
      el.textContent = zone;
    });
  }

  function progress(root) {
    root.querySelectorAll("form").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        var question = form.getAttribute("data-confirm");
        if (question && !window.confirm(question)) {
          event.preventDefault();
          return;
        }
        if (form.classList.contains("busy")) {  // a second click: the first is on its way
          event.preventDefault();
          return;
        }
        form.classList.add("busy");
        form.setAttribute("aria-busy", "true");
        var button = form.querySelector("button[type=submit]");
        var label = form.getAttribute("data-busy");
        if (button && label) {
          button.textContent = label;
        }
        // Only forms that are still waiting after a moment show the bar.
        window.setTimeout(function () {
          if (!form.classList.contains("busy")) { return; }
          var bar = document.createElement("progress");
          bar.className = "working";
          bar.setAttribute("aria-label", label || "Working");
          form.appendChild(bar);
        }, 300);
      });
    });
    // Back/forward cache: a restored page is not busy any more.
    window.addEventListener("pageshow", function () {
      root.querySelectorAll("form.busy").forEach(function (form) {
        form.classList.remove("busy");
        form.removeAttribute("aria-busy");
        form.querySelectorAll("progress.working").forEach(function (bar) { bar.remove(); });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    viewerZone(document);
    progress(document);
  });
})();
