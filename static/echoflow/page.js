/* The schedules page's few behaviours htmx does not cover: closing drawers and dialogs (Escape, buttons) with
   focus given back, fields shown per trigger kind, which fields the user touched (live validation only speaks
   about those), aria-invalid kept in step with the messages, toasts, and readable errors for failed requests. */
(function () {
  "use strict";

  var opener = null; // the control that opened the drawer or dialog; focus returns to it on close

  // Which runs are expanded in the run log, so a poll or a retry keeps them expanded.
  window.echoflowOpenRuns = function () {
    return Array.prototype.map
      .call(document.querySelectorAll("#run-panel details[open]"), function (d) { return d.dataset.run; })
      .join(",");
  };

  function region(name) { return document.getElementById(name + "-region"); }

  function closeRegion(name) {
    var r = region(name);
    if (!r || !r.firstElementChild) { return false; }
    r.innerHTML = "";
    if (name === "panel") {
      var url = new URL(window.location.href);
      url.searchParams.delete("schedule");
      url.searchParams.delete("panel");
      window.history.pushState({}, "", url.pathname + url.search);
    }
    if (opener && document.body.contains(opener)) { opener.focus(); }
    opener = null;
    return true;
  }

  function toast(message, level) {
    var box = document.getElementById("toasts");
    if (!box) { return; }
    var existing = Array.prototype.find.call(box.children, function (t) { return t.dataset.message === message; });
    if (existing) { return; }
    var el = document.createElement("div");
    el.className = "toast toast-" + (level || "error");
    el.setAttribute("role", level === "success" ? "status" : "alert");
    el.dataset.message = message;
    var text = document.createElement("span");
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("data-dismiss", "");
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    el.appendChild(text);
    el.appendChild(close);
    box.appendChild(el);
    settleToasts(box);
  }

  function settleToasts(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(".toast-success:not([data-timer])"), function (t) {
      t.dataset.timer = "1";
      window.setTimeout(function () { t.remove(); }, 7000);
    });
  }

  function showWhen(form) {
    var kind = form.querySelector("input[name=trigger_kind]:checked");
    var value = kind ? kind.value : "";
    Array.prototype.forEach.call(form.querySelectorAll("[data-show-when]"), function (el) {
      var rule = el.dataset.showWhen.split("=");
      el.hidden = rule[0] === "trigger_kind" && rule[1] !== value;
    });
  }

  function syncInvalid(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".field-error[id^=error-]"), function (p) {
      var input = document.getElementById("id_" + p.id.slice("error-".length));
      if (!input) { return; }
      if (p.textContent.trim()) { input.setAttribute("aria-invalid", "true"); } else { input.removeAttribute("aria-invalid"); }
    });
  }

  function initEditor(form, fresh) {
    showWhen(form);
    syncInvalid(form);
    if (!fresh) { return; }
    form.efTouched = new Set();
    var zone = form.querySelector("[data-guess-zone]");
    if (zone && zone.value === "UTC" && window.Intl) {
      var guess = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (guess && guess !== "UTC" && document.querySelector('#zones option[value="' + guess + '"]')) {
        zone.value = guess;
        zone.dispatchEvent(new Event("input", { bubbles: true }));
      }
    }
    var target = form.querySelector("#editor-conflict, #editor-errors") || form.querySelector("[aria-invalid=true]") ||
      form.querySelector("[autofocus]") || form.querySelector("input:not([type=hidden]), select, textarea");
    if (target) { target.focus({ preventScroll: false }); }
  }

  function init(root) {
    var form = document.getElementById("editor-form");
    if (form && (root === document || root.contains(form) || root.id === "drawer-region")) {
      initEditor(form, !form.efInitialised);
      form.efInitialised = true;
    } else if (form && root.closest && root.closest("#editor-form")) {
      syncInvalid(form);
    }
    var dialog = document.querySelector("#modal-region [autofocus]");
    if (dialog && (root === document || root.id === "modal-region")) { dialog.focus(); }
    settleToasts(document);
  }

  document.addEventListener("click", function (e) {
    var closer = e.target.closest("[data-close]");
    if (closer) { e.preventDefault(); closeRegion(closer.dataset.close); return; }
    var dismiss = e.target.closest("[data-dismiss]");
    if (dismiss) { dismiss.closest(".toast").remove(); }
  });

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Escape") { return; }
    // In a field with suggestions (time zone, action, agent), Escape is for closing the suggestions.
    if (e.target.hasAttribute && e.target.hasAttribute("list")) { return; }
    if (closeRegion("modal") || closeRegion("drawer") || closeRegion("panel")) { e.preventDefault(); }
  });

  // Live validation reports on the fields the user has been to; saving reports on all of them.
  function touch(e) {
    var form = e.target.form;
    if (!form || form.id !== "editor-form" || !e.target.name || e.target.name.charAt(0) === "_") { return; }
    form.efTouched = form.efTouched || new Set();
    form.efTouched.add(e.target.name);
    form.querySelector("input[name=_touched]").value = Array.from(form.efTouched).join(",");
    if (e.target.name === "trigger_kind") { showWhen(form); }
  }
  document.addEventListener("input", touch);
  document.addEventListener("change", touch);

  document.addEventListener("htmx:beforeRequest", function (e) {
    var target = e.detail.target;
    if (target && (target.id === "drawer-region" || target.id === "modal-region") &&
        !e.detail.elt.closest("#drawer-region, #modal-region")) {
      opener = e.detail.elt;
    }
    if (target && target.id === "table-region") { target.setAttribute("aria-busy", "true"); }
  });

  document.addEventListener("htmx:afterSettle", function (e) { init(e.detail.target || document); });
  document.addEventListener("htmx:oobAfterSwap", function (e) {
    var form = document.getElementById("editor-form");
    if (form && e.detail.target && form.contains(e.detail.target)) { syncInvalid(form); }
  });

  var STATUS_WORDS = {
    400: "The server could not read that request. Reload the page and try again.",
    403: "You are not allowed to do that in this organization.",
    404: "That is not there any more: it may have been deleted. Reload the page to see the current state.",
    405: "That action is not available here. Reload the page.",
    429: "Too many requests at once. Wait a moment and try again.",
  };

  document.addEventListener("htmx:responseError", function (e) {
    var xhr = e.detail.xhr;
    var type = xhr.getResponseHeader("Content-Type") || "";
    var text = type.indexOf("text/plain") === 0 ? xhr.responseText.trim() : "";
    var message = text && text.length < 400 ? text : STATUS_WORDS[xhr.status] ||
      "The server failed (HTTP " + xhr.status + "). Try again; if it keeps failing, tell whoever runs EchoFlow.";
    toast(message, "error");
  });

  document.addEventListener("htmx:sendError", function () {
    toast("Cannot reach EchoFlow: check your connection. Live updates resume when it is back.", "error");
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
})();
