/* Renders every <canvas data-chart="ID"> from the Chart.js configuration that the server wrote
   into <script type="application/json" id="ID"> (Django's json_script), so pages hold no inline code.
   Extras the server may put in a configuration:
     "links": [[url, …], …]  per dataset, one per point; clicking a point opens it
     "tooltips": [[text], …] per dataset, per point: the lines a hover shows
   Each rendered canvas gets data-rendered="N" with N the number of points drawn, for tests. */
(function () {
  "use strict";

  function render(canvas) {
    var source = document.getElementById(canvas.dataset.chart);
    if (!source || typeof Chart === "undefined") { return; }
    var config = JSON.parse(source.textContent);
    var links = config.links || null;
    var tooltips = config.tooltips || null;
    delete config.links;
    delete config.tooltips;
    config.options = config.options || {};
    config.options.maintainAspectRatio = false;
    config.options.animation = false;
    if (tooltips) {
      config.options.plugins = config.options.plugins || {};
      config.options.plugins.tooltip = {
        callbacks: {
          label: function (item) {
            var lines = (tooltips[item.datasetIndex] || [])[item.dataIndex];
            return lines || item.formattedValue;
          }
        }
      };
    }
    if (links) {
      config.options.onClick = function (event, elements) {
        if (elements.length && links[elements[0].datasetIndex] && links[elements[0].datasetIndex][elements[0].index]) {
          window.location.href = links[elements[0].datasetIndex][elements[0].index];
        }
      };
      config.options.onHover = function (event, elements) {
        event.native.target.style.cursor = elements.length ? "pointer" : "default";
      };
    }
    var chart = new Chart(canvas, config);
    var points = 0;
    chart.data.datasets.forEach(function (dataset) { points += (dataset.data || []).length; });
    canvas.dataset.rendered = String(points);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-chart]").forEach(render);
  });
})();
