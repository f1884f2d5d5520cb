"""Speech LLM backbones behind one interface (:class:`speechsum.models.base.SpeechLLM`)."""
