System.Console.WriteLine("bflora");
