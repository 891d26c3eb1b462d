"""What hosts the app: sessions, visitors, temp files, threads, memory, the ZeroGPU fork harness."""
