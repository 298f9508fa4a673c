using ScottPlot;

namespace Bflora.Training;

/// <summary>loss.png: the logged loss against the step, with the learning rate on a second y axis.</summary>
public static class LossPlot
{
    public static void Write(string path, IReadOnlyList<MetricsRow> rows, string title)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss");
        double[] steps = rows.Select(r => (double)r.Step).ToArray();
        var loss = plot.Add.Scatter(steps, rows.Select(r => r.Loss).ToArray());
        loss.LegendText = "loss";
        var lrAxis = plot.Axes.AddRightAxis();
        lrAxis.LabelText = "learning rate";
        var lr = plot.Add.Scatter(steps, rows.Select(r => r.Lr).ToArray());
        lr.Axes.YAxis = lrAxis;
        lr.LegendText = "lr";
        lr.LinePattern = LinePattern.Dashed;
        plot.ShowLegend(Alignment.UpperRight);
        string full = Path.GetFullPath(path);
        // Rendered to a temporary name and renamed, like every other output, so a reader never sees half a PNG.
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.png");
        try
        {
            plot.SavePng(temp, 900, 500);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
