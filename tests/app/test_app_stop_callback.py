"""The STOP-file callback: nothing happens without the file; with it the Trainer is told to save and stop."""

from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_pept.stop_callback import StopFileCallback, request_stop, stop_requested


def test_stop_file_makes_the_trainer_save_and_stop(tmp_path):
    callback = StopFileCallback(tmp_path)
    args = TrainingArguments(str(tmp_path / "out"), report_to=[])
    control = callback.on_step_end(args, TrainerState(), TrainerControl())
    assert not control.should_save and not control.should_training_stop
    assert not stop_requested(tmp_path)
    request_stop(tmp_path, "test")
    control = callback.on_step_end(args, TrainerState(), TrainerControl())
    assert control.should_save and control.should_training_stop
    assert (tmp_path / "STOP").read_text() == "test\n"
