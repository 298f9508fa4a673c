System.Console.WriteLine(Bflora.Probe.Sum());
