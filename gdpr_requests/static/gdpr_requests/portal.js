/* Public portal: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";

  // Move focus to the error summary so screen readers announce it and keyboard users start there.
  function focusErrorSummary() {
    var summary = document.querySelector("[data-error-summary]");
    if (summary) {
      summary.focus();
    }
  }

  // The CCPA disclosure question only applies to California residents asking for a copy of their data.
  function toggleDisclosure() {
    var wrapper = document.querySelector("[data-disclosure]");
    if (!wrapper) {
      return;
    }
    var form = wrapper.closest("form");
    function update() {
      var residence = form.querySelector("input[name='residence']:checked");
      var kind = form.querySelector("input[name='kind']:checked");
      var hasError = wrapper.querySelector(".field--error") !== null;
      var show = hasError || (residence && residence.value === "california" && kind && kind.value === "access");
      wrapper.hidden = !show;
    }
    form.addEventListener("change", update);
    update();
  }

  // Stop a second click from sending the same form twice (a slow phone connection invites it).
  function submitOnce() {
    document.querySelectorAll("form[data-submit-once]").forEach(function (form) {
      form.addEventListener("submit", function () {
        if (form.dataset.submitted) {
          return;
        }
        form.dataset.submitted = "1";
        window.setTimeout(function () {
          form.querySelectorAll("button[type='submit']").forEach(function (button) {
            button.disabled = true;
          });
        }, 0);
      });
    });
  }

  // Coming back with the browser's Back button restores the page as it was left: enable its buttons again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) {
      return;
    }
    document.querySelectorAll("form[data-submit-once]").forEach(function (form) {
      delete form.dataset.submitted;
      form.querySelectorAll("button[type='submit']").forEach(function (button) {
        button.disabled = false;
      });
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    focusErrorSummary();
    toggleDisclosure();
    submitOnce();
  });
})();
